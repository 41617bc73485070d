// Refined io-ts codecs for the catalogue. They decode to plain `number` / `string` (no brands)
// so events stay easy to build, while still rejecting what the kernel or a user could never mean.
import * as t from './io-ts.js';

const refine = <A>(name: string, is: (u: unknown) => u is A): t.Type<A, A, unknown> => new t.Type<A, A, unknown>(name, is, (u, c) => (is(u) ? t.success(u) : t.failure(u, c)), t.identity);

export const Int = refine('integer', (u): u is number => Number.isSafeInteger(u));
export const NonNegativeInt = refine('integer ≥ 0', (u): u is number => Number.isSafeInteger(u) && (u as number) >= 0);
export const PositiveInt = refine('integer ≥ 1', (u): u is number => Number.isSafeInteger(u) && (u as number) >= 1);

const pattern = (name: string, re: RegExp) => refine(name, (u): u is string => typeof u === 'string' && re.test(u));

/** Names users choose (jobs, nodes, units): lower case, digits, `.`, `_`, `-`; 1–64 characters. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const Name = pattern(`name matching ${NAME_PATTERN.source}`, NAME_PATTERN);
export const NonEmptyString = refine('non-empty string', (u): u is string => typeof u === 'string' && u.length > 0);
/** ISO-8601 UTC timestamp as written by `Date.prototype.toISOString`. */
export const Timestamp = pattern('ISO-8601 UTC timestamp', /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/);
export const Sha256 = pattern('SHA-256 hex digest', /^[0-9a-f]{64}$/);

export const NonNegativeNumber = refine('number ≥ 0', (u): u is number => typeof u === 'number' && Number.isFinite(u) && u >= 0);

/** A codec with required (and optional) properties; properties it does not know are stripped. */
export function record<R extends t.Props>(required: R): t.ExactC<t.TypeC<R>>;
export function record<R extends t.Props, O extends t.Props>(required: R, optional: O): t.ExactC<t.IntersectionC<[t.TypeC<R>, t.PartialC<O>]>>;
export function record(required: t.Props, optional?: t.Props): t.Mixed {
  return optional ? t.exact(t.intersection([t.type(required), t.partial(optional)])) : t.exact(t.type(required));
}

export const literals = <L extends [string, string, ...string[]]>(...values: L) =>
  t.union(values.map((v) => t.literal(v)) as unknown as [t.LiteralC<L[0]>, t.LiteralC<L[1]>, ...t.LiteralC<L[number]>[]]);

export const nullable = <C extends t.Mixed>(codec: C) => t.union([codec, t.null]);
