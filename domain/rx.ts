// The parts of RxJS ckpt uses, required module by module: its index loads all 224 of its modules,
// and an ES module importing them pays for format detection and an export scan of each (see
// io-ts.ts); ~100 ms of every `ckpt` start before this. Import from here, not from 'rxjs'.
import { createRequire } from 'node:module';
import type * as Rx from 'rxjs';

const require = createRequire(import.meta.url);
const part = <M>(name: string): M => require(`rxjs/internal/${name}`) as M;

export type Observable<T> = Rx.Observable<T>;
export type Subject<T> = Rx.Subject<T>;
export type { OperatorFunction, Subscription } from 'rxjs';
export const { Observable } = part<{ Observable: typeof Rx.Observable }>('Observable');
export const { Subject } = part<{ Subject: typeof Rx.Subject }>('Subject');
export const { firstValueFrom } = part<{ firstValueFrom: typeof Rx.firstValueFrom }>('firstValueFrom');
export const { from } = part<{ from: typeof Rx.from }>('observable/from');
export const { merge } = part<{ merge: typeof Rx.merge }>('observable/merge');
export const { interval } = part<{ interval: typeof Rx.interval }>('observable/interval');
export const { concatMap } = part<{ concatMap: typeof Rx.concatMap }>('operators/concatMap');
export const { filter } = part<{ filter: typeof Rx.filter }>('operators/filter');
export const { scan } = part<{ scan: typeof Rx.scan }>('operators/scan');
export const { share } = part<{ share: typeof Rx.share }>('operators/share');
export const { timeout } = part<{ timeout: typeof Rx.timeout }>('operators/timeout');
