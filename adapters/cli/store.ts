import type { EventStore } from '../../domain/event-store.js';
import { userInfo } from 'node:os';
import { defaultAppendContext, type AppendContext } from '../store/batch.js';
import { openEventStore, storeUrl } from '../store/open.js';
import { stringOption, type ParsedArgs } from './args.js';

/** The store a command works on: --store, else CKPT_STORE, else $CKPT_HOME/events.db. */
export const storeUrlOf = (args: ParsedArgs): string => storeUrl(stringOption(args, 'store'));

export const openStore = (args: ParsedArgs, context?: AppendContext): EventStore => openEventStore(storeUrlOf(args), context);

/** The store, with appends recorded as this user (uid and name): what authorization checks. */
export const openStoreAsUser = (args: ParsedArgs): EventStore => {
  const user = userInfo();
  return openStore(args, defaultAppendContext({ kind: 'user', uid: user.uid, user: user.username }));
};

export const needRoot = (what: string): void => {
  if (process.getuid?.() !== 0) {
    throw new Error(`${what} needs root: the proc connector and cgroups need CAP_NET_ADMIN and CAP_SYS_ADMIN (run it with sudo)`);
  }
};
