// Reading CRIU image directories without crit (no Python, no protobuf library).
//
// Image file layout (criu/include/magic.h, criu/image.c): a file starts with IMG_COMMON_MAGIC
// (or IMG_SERVICE_MAGIC for stats) and the image's own magic, both 32-bit little endian; only
// inventory.img (and raw images such as pages-N.img) skip the common prefix. After the magics come
// entries, each a 32-bit little-endian length followed by that many bytes of a protobuf message.
//
// pstree.img (PSTREE_MAGIC 0x50273030) holds one `pstree_entry` per process (images/pstree.proto):
//   required uint32 pid = 1; required uint32 ppid = 2; required uint32 pgid = 3;
//   required uint32 sid = 4; repeated uint32 threads = 5;
// PIDs are as seen in the dumped tree's own PID namespace; the root's ppid is 0 (its parent is
// outside the tree). Verified against dumps made by
// criu 4.1.1 here (threads come unpacked, one field-5 varint per thread; packed is accepted too).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const IMG_COMMON_MAGIC = 0x54564319;
export const IMG_SERVICE_MAGIC = 0x55105940;
export const PSTREE_MAGIC = 0x50273030;

export interface PstreeEntry {
  readonly pid: number;
  /** 0 for the root of the dump. */
  readonly ppid: number;
  readonly pgid: number;
  readonly sid: number;
  readonly threads: number[];
}

export interface ImageFile {
  readonly name: string;
  readonly bytes: number;
}

const hex = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;

/** A protobuf varint at `offset`: its value (exact up to 2^53) and the offset after it. */
export const readVarint = (buf: Uint8Array, offset: number, end = buf.length): { value: number; next: number } => {
  let value = 0;
  let scale = 1;
  let pos = offset;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw new Error(`truncated varint at byte ${offset}`);
    const byte = buf[pos++] as number;
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return { value, next: pos };
    scale *= 128;
  }
  throw new Error(`varint longer than 10 bytes at byte ${offset}`);
};

type Field = { field: number; wire: 0; value: number } | { field: number; wire: 2; bytes: Uint8Array };

/** Fields of one protobuf message (varint and length-delimited; fixed32/64 are skipped). */
export const decodeMessage = (msg: Uint8Array): Field[] => {
  const fields: Field[] = [];
  let pos = 0;
  while (pos < msg.length) {
    const key = readVarint(msg, pos);
    pos = key.next;
    const field = Math.floor(key.value / 8);
    const wire = key.value % 8;
    if (wire === 0) {
      const v = readVarint(msg, pos);
      pos = v.next;
      fields.push({ field, wire: 0, value: v.value });
    } else if (wire === 2) {
      const len = readVarint(msg, pos);
      pos = len.next;
      if (pos + len.value > msg.length) throw new Error(`field ${field} runs past the end of its message`);
      fields.push({ field, wire: 2, bytes: msg.subarray(pos, pos + len.value) });
      pos += len.value;
    } else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else throw new Error(`unsupported protobuf wire type ${wire} (field ${field})`);
  }
  if (pos !== msg.length) throw new Error('protobuf message ends inside a field');
  return fields;
};

/** The entries (protobuf messages) of an image file with the given magic. */
export const readImageEntries = (file: string, magic: number): Uint8Array[] => {
  const buf = readFileSync(file);
  if (buf.length < 8) throw new Error(`${file}: too short for a CRIU image (${buf.length} bytes)`);
  let pos = 0;
  const first = buf.readUInt32LE(0);
  if (first === IMG_COMMON_MAGIC || first === IMG_SERVICE_MAGIC) pos = 4;
  const found = buf.readUInt32LE(pos);
  if (found !== magic) throw new Error(`${file}: image magic ${hex(found)}, expected ${hex(magic)} (not this kind of CRIU image)`);
  pos += 4;
  const entries: Uint8Array[] = [];
  while (pos < buf.length) {
    if (pos + 4 > buf.length) throw new Error(`${file}: truncated entry size at byte ${pos}`);
    const size = buf.readUInt32LE(pos);
    pos += 4;
    if (pos + size > buf.length) throw new Error(`${file}: entry of ${size} bytes at byte ${pos - 4} runs past the end of the file`);
    entries.push(buf.subarray(pos, pos + size));
    pos += size;
  }
  return entries;
};

const uint = (fields: Field[], n: number, file: string, what = 'pstree entry'): number => {
  const f = fields.find((x) => x.field === n);
  if (f === undefined || f.wire !== 0) throw new Error(`${file}: ${what} lacks required field ${n}`);
  return f.value;
};

/** A repeated uint field, packed or not. */
const uints = (fields: Field[], n: number): number[] => {
  const values: number[] = [];
  for (const f of fields) {
    if (f.field !== n) continue;
    if (f.wire === 0) values.push(f.value);
    else
      for (let p = 0; p < f.bytes.length; ) {
        const v = readVarint(f.bytes, p);
        values.push(v.value);
        p = v.next;
      }
  }
  return values;
};

/** The processes of a dump, in image order (the root first), from DIR/pstree.img. */
export const readPstree = (imagesDir: string): PstreeEntry[] => {
  const file = join(imagesDir, 'pstree.img');
  return readImageEntries(file, PSTREE_MAGIC).map((msg) => {
    const fields = decodeMessage(msg);
    return { pid: uint(fields, 1, file), ppid: uint(fields, 2, file), pgid: uint(fields, 3, file), sid: uint(fields, 4, file), threads: uints(fields, 5) };
  });
};

/** Files CRIU wrote into an images directory (every regular file except logs and pid files), by name. */
export const imageFiles = (dir: string): ImageFile[] =>
  readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isFile() && !d.name.endsWith('.log') && !d.name.endsWith('.pid'))
    .map((d) => ({ name: d.name, bytes: statSync(join(dir, d.name)).size }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

/** Total size of the image files of a dump. */
export const imageBytes = (dir: string): number => imageFiles(dir).reduce((sum, f) => sum + f.bytes, 0);

/** core-PID.img (images/core.proto): core_entry.thread_core (5) → thread_core_entry.creds (10). */
export const CORE_MAGIC = 0x55053847;

export interface DumpedCredentials {
  readonly uid: number;
  readonly gid: number;
  /** Effective and saved uids and gids too: CRIU restores all four of each. */
  readonly uids: readonly number[];
  readonly gids: readonly number[];
  readonly groups: readonly number[];
}

/**
 * The credentials a dumped process had (creds_entry: uid 1, gid 2, euid 3, egid 4, suid 5,
 * sgid 6, fsuid 7, fsgid 8, groups 14), from DIR/core-PID.img; the root's when pid is not given.
 */
export const readDumpedCredentials = (imagesDir: string, pid = readPstree(imagesDir)[0]?.pid): DumpedCredentials => {
  const file = join(imagesDir, `core-${pid}.img`);
  const sub = (fields: Field[], n: number): Field[] => {
    const f = fields.find((x) => x.field === n);
    if (f === undefined || f.wire !== 2) throw new Error(`${file}: no field ${n} where CRIU keeps a task's credentials`);
    return decodeMessage(f.bytes);
  };
  const [entry] = readImageEntries(file, CORE_MAGIC);
  if (entry === undefined) throw new Error(`${file}: no core entry`);
  const creds = sub(sub(decodeMessage(entry), 5), 10);
  const at = (n: number) => uint(creds, n, file, 'credentials entry');
  return { uid: at(1), gid: at(2), uids: [at(1), at(3), at(5), at(7)], gids: [at(2), at(4), at(6), at(8)], groups: uints(creds, 14) };
};
