import type { EventStore } from '../../domain/event-store.js';
import { defaultNode } from '../agent/daemon.js';
import type { AppendContext } from '../store/batch.js';
import { openEventStore } from '../store/open.js';
import { storeUrl } from '../store/url.js';
import { GatewayEventStore } from './agent-client.js';
import { type ParsedArgs, stringOption } from './args.js';

/** The store a command works on: --store, else CKPT_STORE, else $CKPT_HOME/events.db. */
export const storeUrlOf = (args: ParsedArgs): string => storeUrl(stringOption(args, 'store'));

const isRoot = (): boolean => process.getuid?.() === 0;

/**
 * The store to read (and, given a context, for an agent to append to). Root opens it; anyone
 * else reads through the node agent, which shows them their own jobs and the node streams.
 */
export const openStore = (args: ParsedArgs, context?: AppendContext): EventStore => (context || isRoot() ? openEventStore(storeUrlOf(args), context) : openStoreAsUser(args));

/**
 * The store for a user's requests: every append is a request to the node agent (of --node, else
 * this machine's, else any agent of the store here), which records it as the caller the kernel
 * names. Reads go to the store when the caller may open it (root), else through the agent.
 */
export const openStoreAsUser = (args: ParsedArgs): GatewayEventStore => {
  const url = storeUrlOf(args);
  return new GatewayEventStore({ node: stringOption(args, 'node') ?? defaultNode(), url, ...(isRoot() && { direct: openEventStore(url) }) });
};

export const needRoot = (what: string): void => {
  if (process.getuid?.() !== 0) {
    throw new Error(`${what} needs root: the proc connector and cgroups need CAP_NET_ADMIN and CAP_SYS_ADMIN (run it with sudo)`);
  }
};
