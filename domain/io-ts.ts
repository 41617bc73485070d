// io-ts (and fp-ts's Either, what its decoders return), required rather than imported. An ES
// module that imports a CommonJS package makes Node detect each file's format and scan its source
// for export names before running it: ~25 ms of every `ckpt` start for these two alone, while
// require() just runs them. Use `import * as t from './io-ts.js'` as one would io-ts itself.
import { createRequire } from 'node:module';
import type * as Either from 'fp-ts/lib/Either.js';
import type * as IoTs from 'io-ts';

export type * from 'io-ts';

const require = createRequire(import.meta.url);
const t = require('io-ts') as typeof IoTs;

export const { ExactType, IntersectionType, UnionType, array, boolean, exact, failure, identity, intersection, literal, number, partial, record, string, success, type, union } = t;
const nullCodec = t.null;

export { nullCodec as null };
export const Type = t.Type;
export type Type<A, O = A, I = unknown> = IoTs.Type<A, O, I>;
// biome-ignore-start lint/suspicious/noExplicitAny: io-ts's own defaults, repeated so these types read as io-ts's
export type ExactType<C extends IoTs.Any, A = any, O = A, I = unknown> = IoTs.ExactType<C, A, O, I>;
export type IntersectionType<CS extends Array<IoTs.Mixed>, A = any, O = A, I = unknown> = IoTs.IntersectionType<CS, A, O, I>;
export type UnionType<CS extends Array<IoTs.Mixed>, A = any, O = A, I = unknown> = IoTs.UnionType<CS, A, O, I>;
// biome-ignore-end lint/suspicious/noExplicitAny: io-ts's own defaults

/** fp-ts's Either: what a decoder returns. */
export const either = require('fp-ts/lib/Either.js') as typeof Either;
export type { Either } from 'fp-ts/lib/Either.js';
