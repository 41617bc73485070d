// CRIU's statistics: after a dump it writes `stats-dump`, after a restore `stats-restore`, into
// its work directory (criu/stats.c). Each is an image with IMG_SERVICE_MAGIC and STATS_MAGIC
// and one stats_entry (proto/criu-stats.proto); times are in microseconds there, in ms here.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import protobuf from 'protobufjs';
import type { DumpStats } from '../../domain/events/checkpoint.js';
import type { RestoreStats } from '../../domain/events/restart.js';
import { readImageEntries } from './criu-images.js';
import { protoDir } from './criu-rpc.js';

export const STATS_MAGIC = 0x57093306;

let statsType: protobuf.Type | undefined;

interface StatsEntry {
  readonly dump?: Partial<Record<'freezingTime' | 'frozenTime' | 'memdumpTime' | 'memwriteTime' | 'pagesScanned' | 'pagesSkippedParent' | 'pagesWritten' | 'pagesLazy', number>>;
  readonly restore?: Partial<Record<'pagesCompared' | 'pagesSkippedCow' | 'forkingTime' | 'restoreTime' | 'pagesRestored', number>>;
}

/** The stats_entry of DIR/NAME; undefined when CRIU wrote none (it writes it only on success). */
const readStats = (dir: string, name: string): StatsEntry | undefined => {
  const file = join(dir, name);
  if (!existsSync(file)) return undefined;
  statsType ??= protobuf.loadSync(join(protoDir, 'criu-stats.proto')).lookupType('stats_entry');
  const [entry] = readImageEntries(file, STATS_MAGIC);
  if (entry === undefined) throw new Error(`${file}: a stats image without an entry`);
  return statsType.toObject(statsType.decode(entry), { longs: Number }) as StatsEntry;
};

const ms = (us: number | undefined): number => (us ?? 0) / 1000;

/** CRIU's stats of the dump whose work directory is `dir` (the images directory for ckpt's dumps). */
export const readDumpStats = (dir: string): DumpStats | undefined => {
  const d = readStats(dir, 'stats-dump')?.dump;
  return (
    d && {
      freezingMs: ms(d.freezingTime),
      frozenMs: ms(d.frozenTime),
      memdumpMs: ms(d.memdumpTime),
      memwriteMs: ms(d.memwriteTime),
      pagesScanned: d.pagesScanned ?? 0,
      pagesSkippedParent: d.pagesSkippedParent ?? 0,
      pagesWritten: d.pagesWritten ?? 0,
      pagesLazy: d.pagesLazy ?? 0,
    }
  );
};

/** CRIU's stats of the restore whose work directory is `dir`. */
export const readRestoreStats = (dir: string): RestoreStats | undefined => {
  const r = readStats(dir, 'stats-restore')?.restore;
  return (
    r && {
      forkingMs: ms(r.forkingTime),
      restoreMs: ms(r.restoreTime),
      pagesRestored: r.pagesRestored ?? 0,
      pagesCompared: r.pagesCompared ?? 0,
      pagesSkippedCow: r.pagesSkippedCow ?? 0,
    }
  );
};
