import type { EventStore } from '../../domain/event-store.js';
import { openEventStore, storeUrl } from '../store/open.js';
import { stringOption, type ParsedArgs } from './args.js';

/** The store a command works on: --store, else CKPT_STORE, else $CKPT_HOME/events.db. */
export const openStore = (args: ParsedArgs): EventStore => openEventStore(storeUrl(stringOption(args, 'store')));
