// Reading data recorded with an older schema version: each event type's changes are a chain of
// pure functions, version N → N + 1, applied in turn up to the version the codec reads. The rows
// themselves are never rewritten (the digest chain covers what was stored).
import { either as E, type Either } from '../io-ts.js';
import type { EventDefinition } from './define.js';

/** A schema version this ckpt cannot read: written by a newer ckpt, or one that never existed. */
export class SchemaVersionError extends Error {
  override readonly name = 'SchemaVersionError';
  constructor(
    readonly eventType: string,
    readonly version: number,
    readonly current: number,
  ) {
    super(
      version > current
        ? `${eventType} was recorded with schema version ${version}; this ckpt reads ${current === 1 ? 'version 1' : `versions 1 to ${current}`} of it (a newer ckpt wrote it: read it with that version or newer)`
        : `${eventType} has schema version ${JSON.stringify(version)}, which never existed (versions 1 to ${current})`,
    );
  }
}

const isRecord = (v: unknown): v is Readonly<Record<string, unknown>> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The data of an event recorded with `version`, in the shape of the definition's current version.
 * Data that is not an object is passed on unchanged: the codec then says what is wrong with it.
 */
export const upcast = (definition: EventDefinition, version: number, data: unknown): Either<SchemaVersionError, unknown> => {
  const current = definition.schemaVersion;
  if (!Number.isSafeInteger(version) || version < 1 || version > current) return E.left(new SchemaVersionError(definition.type, version, current));
  let shaped = data;
  for (let v = version; v < current && isRecord(shaped); v++) shaped = definition.changes[v - 1]!.up(shaped);
  return E.right(shaped);
};
