// A second (or third) OS process working on the same store, for the cross-process contract tests.
// Usage: node store-worker.js URL MODE ARGS…
//   race STREAM_PREFIX COUNT START_MS  at START_MS (epoch), try to create each stream PREFIX-k with
//                                      expected revision no_stream; print "won k" / "lost k"
//   exact STREAM COUNT TAG             append COUNT single events with the exact expected revision,
//                                      retrying on conflict; print "conflicts N" at the end
//   batches STREAM SIZE TAG            append batches of SIZE events forever; print "committed B"
//                                      after each append returns

import { openEventStore } from '../../adapters/store/open.js';
import { WrongExpectedRevisionError } from '../../domain/event-store.js';
import { marker } from './events.js';

const [url, mode, ...args] = process.argv.slice(2);
const store = openEventStore(url!);
const print = (line: string) => process.stdout.write(line + '\n');

const modes: Record<string, () => Promise<void>> = {
  async race() {
    const [prefix, count, start] = args;
    while (Date.now() < Number(start)) await new Promise((r) => setTimeout(r, 1));
    for (let k = 0; k < Number(count); k++) {
      try {
        await store.append(`${prefix}-${k}`, [marker(`race ${k} by ${process.pid}`)], { expectedRevision: 'no_stream' });
        print(`won ${k}`);
      } catch (error) {
        if (!(error instanceof WrongExpectedRevisionError)) throw error;
        print(`lost ${k}`);
      }
    }
  },
  async exact() {
    const [stream, count, tag] = args;
    let conflicts = 0;
    for (let i = 0; i < Number(count); ) {
      const revision = await store.streamRevision(stream!);
      try {
        await store.append(stream!, [marker(`${tag} ${i}`)], { expectedRevision: revision ?? 'no_stream' });
        i++;
      } catch (error) {
        if (!(error instanceof WrongExpectedRevisionError)) throw error;
        conflicts++;
      }
    }
    print(`conflicts ${conflicts}`);
  },
  async batches() {
    const [stream, size, tag] = args;
    for (let batch = 0; ; batch++) {
      const events = Array.from({ length: Number(size) }, (_, i) => marker(`${tag} ${batch} ${i}/${size}`));
      await store.append(stream!, events);
      print(`committed ${batch}`);
    }
  },
};

const run = modes[mode!];
if (!run) throw new Error(`unknown mode ${mode}`);
run()
  .then(() => store.close())
  .catch((error) => {
    process.stderr.write(`${error?.stack ?? error}\n`);
    process.exit(1);
  });
