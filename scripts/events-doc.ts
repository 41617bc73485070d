// Renders docs/events.md from the event catalogue, so the doc cannot drift from the code.
// `node dist/scripts/events-doc.js` rewrites it; test/catalogue.test.ts checks it is current.
import { writeFileSync } from 'node:fs';
import * as t from 'io-ts';
import { concerns } from '../domain/events/catalogue.js';

/** `name`, or `name?` when optional, for the top-level fields of an event's data. */
const fieldsOf = (codec: t.Mixed): string[] => {
  const inner = codec instanceof t.ExactType ? codec.type : codec;
  if (inner instanceof t.InterfaceType) return Object.keys(inner.props);
  if (inner instanceof t.IntersectionType) {
    return (inner.types as t.Mixed[]).flatMap((part) => (part instanceof t.PartialType ? Object.keys(part.props).map((k) => `${k}?`) : fieldsOf(part)));
  }
  return [];
};

export const renderEventsDoc = (): string => {
  const lines = [
    '# Event catalogue',
    '',
    '<!-- Generated from domain/events/ by scripts/events-doc.ts: edit the code, then run',
    '     `npm run build && node dist/scripts/events-doc.js`. A test fails when this file is stale. -->',
    '',
    'Every event is stored in an envelope: `id` (UUID), `stream` (`job-<id>` or `node-<id>`), `revision`',
    '(0-based, per stream), `position` (global, increasing in commit order), `type`, `schemaVersion`, `data`,',
    'and `metadata`: `actor` (`user` with uid and optional gid, pid and name, `node`, or `coordinator`),',
    '`recordedAt` (the appender’s clock), optional `correlationId` and `causationId`, and for decisions',
    '`decidedAt` (the position decided on). A user’s uid, gid and pid are what the kernel said about the',
    'connection to the node agent that recorded the request (SO_PEERCRED), never what a client claimed;',
    'and `digest`: SHA-256 of the event’s content chained to the previous event of its stream (see',
    '“Log integrity” in the README; optional: absent on a store without the chain). Stored rows are',
    'decoded with these codecs when read; a row that does not decode is reported by position and field.',
    'A row recorded with an older schema version (column v) is upcast to the current one when read (see',
    '“Schema versions” at the end); the row itself is never rewritten, and its digest covers it as stored.',
    '',
    'Kinds: **request** someone asked; **decision** derived by a decider from the log (re-derived by',
    '`ckpt verify`); **outcome** what a node agent did when executing a decision; **observation** a fact',
    'seen on a node (kernel, /proc, cgroups, probes). Fields marked `?` are optional.',
  ];
  for (const concern of concerns) {
    lines.push('', `## ${concern.title}`, '', '| event | kind | v | data | meaning |', '|---|---|---|---|---|');
    for (const d of concern.events) {
      lines.push(`| \`${d.type}\` | ${d.kind} | ${d.schemaVersion} | ${fieldsOf(d.codec).join(', ')} | ${d.summary} |`);
    }
  }
  lines.push(
    '',
    '## Schema versions',
    '',
    'How each event’s data changed. Reading upcasts an older row one version at a time',
    '(domain/events/upcast.ts); `ckpt log --json` and `ckpt export` print events as stored. A row with a',
    'version newer than the current one was written by a newer ckpt and is refused, naming both versions.',
    '',
    '| event | version | change |',
    '|---|---|---|',
  );
  for (const concern of concerns) {
    for (const d of concern.events) {
      for (const [i, c] of d.changes.entries()) lines.push(`| \`${d.type}\` | ${i + 1} → ${i + 2} | ${c.change} |`);
    }
  }
  return lines.join('\n') + '\n';
};

if (import.meta.url === `file://${process.argv[1]}`) {
  const target = new URL('../../docs/events.md', import.meta.url);
  writeFileSync(target, renderEventsDoc());
  console.log(`wrote ${target.pathname}`);
}
