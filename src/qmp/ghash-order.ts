/**
 * Which of several unexpected members QEMU reports. QEMU's input visitor
 * puts an object's keys in a GLib hash table (GHashTable with g_str_hash),
 * removes each key as its member is visited, and names the first key left
 * in the table's slot order: "Parameter 'y' is unexpected" for `x=1,y=2`.
 * This module replays GLib 2.74's open-addressing table (quadratic probing,
 * tombstones, in-place resizing) to find that key.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { firstRemaining } from "./ghash-order.ts";
 * assert.equal(firstRemaining(["driver", "node-name", "x", "y"], ["driver", "node-name"]), "y");
 * ```
 * @module
 */

/** GLib's prime moduli, indexed by log2 of the table size. */
const PRIME_MOD = [
  1,
  2,
  3,
  7,
  13,
  31,
  61,
  127,
  251,
  509,
  1021,
  2039,
  4093,
  8191,
  16381,
  32749,
  65521,
  131071,
  262139,
  524287,
  1048573,
  2097143,
  4194301,
  8388593,
  16777213,
  33554393,
  67108859,
  134217689,
  268435399,
  536870909,
  1073741789,
  2147483647,
];
const MIN_SHIFT = 3;
const UNUSED = 0;
const TOMBSTONE = 1;

const utf8 = new TextEncoder();

/** g_str_hash: djb2 over the key's bytes taken as signed chars. */
function strHash(key: string): number {
  let hash = 5381;
  for (const byte of utf8.encode(key)) {
    hash = (Math.imul(hash, 33) + (byte < 0x80 ? byte : byte - 0x100)) >>> 0;
  }
  return hash < 2 ? 2 : hash;
}

/** A GHashTable of string keys, reduced to what decides the order of its slots. */
class StringHashTable {
  #size = 0;
  #mod = 0;
  #mask = 0;
  #hashes: number[] = [];
  #keys: (string | null)[] = [];
  #nodes = 0;
  #occupied = 0;

  constructor() {
    this.#setShift(MIN_SHIFT);
    this.#hashes = new Array(this.#size).fill(UNUSED);
    this.#keys = new Array(this.#size).fill(null);
  }

  #setShift(shift: number): void {
    this.#size = 1 << shift;
    this.#mod = PRIME_MOD[shift];
    this.#mask = this.#size - 1;
  }

  #index(hash: number): number {
    return (Math.imul(hash, 11) >>> 0) % this.#mod;
  }

  /** The slot holding `key`, else the slot an insertion would use. */
  #lookup(key: string, hash: number): number {
    let index = this.#index(hash);
    let tombstone = -1;
    for (let step = 1; this.#hashes[index] !== UNUSED; step++) {
      if (this.#hashes[index] === hash && this.#keys[index] === key) return index;
      if (this.#hashes[index] === TOMBSTONE && tombstone < 0) tombstone = index;
      index = (index + step) & this.#mask;
    }
    return tombstone >= 0 ? tombstone : index;
  }

  insert(key: string): void {
    const hash = strHash(key);
    const index = this.#lookup(key, hash);
    if (this.#hashes[index] > TOMBSTONE) return;
    const wasUnused = this.#hashes[index] === UNUSED;
    this.#hashes[index] = hash;
    this.#keys[index] = key;
    this.#nodes++;
    if (wasUnused) {
      this.#occupied++;
      this.#maybeResize();
    }
  }

  remove(key: string): void {
    const index = this.#lookup(key, strHash(key));
    if (this.#hashes[index] <= TOMBSTONE) return;
    this.#hashes[index] = TOMBSTONE;
    this.#keys[index] = null;
    this.#nodes--;
    this.#maybeResize();
  }

  /** The key in the lowest occupied slot. */
  first(): string | undefined {
    const index = this.#hashes.findIndex((hash) => hash > TOMBSTONE);
    return index < 0 ? undefined : this.#keys[index]!;
  }

  #maybeResize(): void {
    const shrink = this.#size > this.#nodes * 4 && this.#size > 1 << MIN_SHIFT;
    const grow = this.#size <= this.#occupied + Math.floor(this.#occupied / 16);
    if (shrink || grow) this.#resize();
  }

  /** Rehash in place into a table sized for the live keys, as GLib does. */
  #resize(): void {
    const oldSize = this.#size;
    let shift = 0;
    for (let n = Math.trunc(this.#nodes * 1.333); n; n >>= 1) shift++;
    this.#setShift(Math.max(shift, MIN_SHIFT));
    for (let i = oldSize; i < this.#size; i++) {
      this.#hashes.push(UNUSED);
      this.#keys.push(null);
    }
    const relocated = new Set<number>();
    for (let i = 0; i < oldSize; i++) {
      let hash = this.#hashes[i];
      if (hash <= TOMBSTONE) {
        this.#hashes[i] = UNUSED;
        this.#keys[i] = null;
        continue;
      }
      if (relocated.has(i)) continue;
      let key = this.#keys[i];
      this.#hashes[i] = UNUSED;
      this.#keys[i] = null;
      for (;;) {
        let index = this.#index(hash);
        for (let step = 1; relocated.has(index); step++) index = (index + step) & this.#mask;
        relocated.add(index);
        const evictedHash = this.#hashes[index];
        const evictedKey = this.#keys[index];
        this.#hashes[index] = hash;
        this.#keys[index] = key;
        if (evictedHash <= TOMBSTONE) break;
        hash = evictedHash;
        key = evictedKey;
      }
    }
    this.#hashes.length = this.#keys.length = this.#size;
    this.#occupied = this.#nodes;
  }
}

/**
 * The key QEMU reports as unexpected: `keys` are inserted in the given order
 * (the QDict order of the input object), `removed` are then removed in the
 * given order (the members visited), and the first key left in slot order is
 * returned (undefined if none is left).
 */
export function firstRemaining(
  keys: readonly string[],
  removed: readonly string[],
): string | undefined {
  const table = new StringHashTable();
  for (const key of keys) table.insert(key);
  for (const key of removed) table.remove(key);
  return table.first();
}
