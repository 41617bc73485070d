// Decoding untrusted events (from a user, an agent, an HTTP client) into catalogue events.
// A failure names the event type, each field path, what was expected and the value found.

import * as t from '../io-ts.js';
import { either as E, type Either } from '../io-ts.js';
import { type DomainEvent, definitionOf } from './catalogue.js';

export interface EventProblem {
  /** Dotted path from the event, e.g. `data.process.pid`. */
  readonly path: string;
  readonly expected: string;
  readonly value: unknown;
}

export class InvalidEventError extends Error {
  override readonly name = 'InvalidEventError';
  constructor(
    readonly eventType: string,
    readonly problems: readonly EventProblem[],
  ) {
    super(`invalid ${eventType} event: ${problems.map(describeProblem).join('; ')}`);
  }
}

const render = (value: unknown): string => {
  if (value === undefined) return 'nothing';
  const json = JSON.stringify(value) ?? String(value);
  return json.length > 80 ? `${json.slice(0, 77)}...` : json;
};
export const describeProblem = (p: EventProblem): string => `${p.path}: expected ${p.expected}, got ${render(p.value)}`;

// Intersections and unions (also inside t.exact, which adds no entry of its own) put branch
// indexes into the context; they are not field names.
const isBranching = (type: t.Decoder<unknown, unknown>): boolean => {
  const inner = type instanceof t.ExactType ? type.type : type;
  return inner instanceof t.IntersectionType || inner instanceof t.UnionType;
};

const pathOf = (context: t.Context): string => {
  const keys = ['data'];
  context.forEach((entry, i) => {
    const parent = context[i - 1];
    if (i === 0 || entry.key === '' || (parent && isBranching(parent.type))) return;
    keys.push(entry.key);
  });
  return keys.join('.');
};

/** Groups io-ts errors by path, so `nullable(Int)` reads "expected integer or null". */
const problemsOf = (errors: t.Errors): EventProblem[] => {
  const byPath = new Map<string, { expected: string[]; value: unknown }>();
  for (const error of errors) {
    const path = pathOf(error.context);
    const expected = error.context[error.context.length - 1]?.type.name ?? 'a valid value';
    const entry = byPath.get(path) ?? { expected: [], value: error.value };
    if (!entry.expected.includes(expected)) entry.expected.push(expected);
    byPath.set(path, entry);
  }
  return [...byPath].map(([path, { expected, value }]) => ({ path, expected: expected.join(' or '), value }));
};

/** Decodes `{ type, data }`; unknown properties of data are stripped. */
export const decodeEvent = (type: unknown, data: unknown): Either<InvalidEventError, DomainEvent> => {
  if (typeof type !== 'string' || type === '') {
    return E.left(new InvalidEventError(String(type), [{ path: 'type', expected: 'an event type name', value: type }]));
  }
  const definition = definitionOf(type);
  if (!definition) {
    return E.left(new InvalidEventError(type, [{ path: 'type', expected: 'an event type of the catalogue (docs/events.md)', value: type }]));
  }
  const decoded = definition.codec.decode(data);
  return E.isRight(decoded) ? E.right({ type, data: decoded.right } as DomainEvent) : E.left(new InvalidEventError(type, problemsOf(decoded.left)));
};
