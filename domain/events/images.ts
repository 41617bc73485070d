// A committed version's images where they are: on the disk of each node holding its units. Nothing
// assumes a shared filesystem, so what concerns another node's images is asked of that node's agent
// through the log (the only channel between hosts), and each agent acts only on its own images root.

import { NonEmptyString, NonNegativeInt, PositiveInt, record } from '../codecs.js';
import { Failure } from '../failure.js';
import { NodeId } from '../identity.js';
import * as t from '../io-ts.js';
import { defineEvent } from './define.js';

const onNode = { request: NonEmptyString, version: PositiveInt, node: NodeId };

export const ImagesVerifyRequested = defineEvent(
  'ImagesVerifyRequested',
  'request',
  record(onNode),
  'Someone (`ckpt audit --verify` on another node) asked a node’s agent to check its images of a committed version against its manifest and the digest the log recorded.',
);
export const ImagesVerified = defineEvent(
  'ImagesVerified',
  'outcome',
  record({ ...onNode, files: NonNegativeInt, bytes: NonNegativeInt }),
  'The node’s images of the version match its manifest (every file’s size and SHA-256), and the manifest the digest in the log.',
);
export const ImagesVerifyFailed = defineEvent(
  'ImagesVerifyFailed',
  'outcome',
  record({ ...onNode, reason: t.string }, { failure: Failure }),
  'The node’s images of the version are damaged, pruned or absent: the reason names each file and what is wrong with it.',
);
export const PrunePlanned = defineEvent(
  'PrunePlanned',
  'decision',
  record({ request: NonEmptyString, versions: t.array(PositiveInt), kept: t.array(PositiveInt) }),
  'The coordinator chose, from the log, the committed versions a prune removes (all but the newest N, never one a restart uses) and those it keeps; from here on the pruned ones cannot be restarted.',
);
export const ImagesPruneRequested = defineEvent(
  'ImagesPruneRequested',
  'decision',
  record({ version: PositiveInt, node: NodeId }),
  'A node holding units of a pruned version is to remove its part of the images (CheckpointPruned with its node answers).',
);
export const ImagesPruneFailed = defineEvent(
  'ImagesPruneFailed',
  'outcome',
  record({ version: PositiveInt, node: NodeId, reason: t.string }, { failure: Failure }),
  'A node could not remove its part of a pruned version’s images; the reason says what to remove by hand.',
);

export const imageEvents = [ImagesVerifyRequested, ImagesVerified, ImagesVerifyFailed, PrunePlanned, ImagesPruneRequested, ImagesPruneFailed] as const;
