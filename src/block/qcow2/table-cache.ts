/**
 * A bounded write-back cache of one-cluster metadata tables (L2 tables,
 * refcount blocks), least recently used first out. Changed tables stay until
 * {@linkcode TableCache.writeBack}; only unchanged ones are evicted, so the
 * owner decides when (and after what) changes reach the file.
 *
 * @module
 */

import type { BlockNode } from "../node.ts";

/** A cache of cluster-sized tables read from and written to `file`. */
export class TableCache {
  readonly #file: BlockNode;
  readonly #tableSize: number;
  readonly #capacity: number;
  /** Tables by host offset, least recently used first. */
  readonly #tables = new Map<number, Uint8Array>();
  readonly #loading = new Map<number, Promise<Uint8Array>>();
  readonly #dirty = new Set<number>();
  #lastOffset = -1;

  /** A cache of at most `capacity` unchanged tables of `tableSize` bytes each. */
  constructor(file: BlockNode, tableSize: number, capacity: number) {
    this.#file = file;
    this.#tableSize = tableSize;
    this.#capacity = Math.max(2, capacity);
  }

  /** Whether some table was changed and not yet written back. */
  get dirty(): boolean {
    return this.#dirty.size > 0;
  }

  /** How many changed tables wait for write-back. */
  get dirtyCount(): number {
    return this.#dirty.size;
  }

  /** The table at host `offset` when it is cached; never reads (nor counts as a use). */
  peek(offset: number): Uint8Array | undefined {
    return this.#tables.get(offset);
  }

  /** The table at host `offset`, read from the file on a miss (the caller validated `offset`). */
  get(offset: number): Uint8Array | Promise<Uint8Array> {
    const table = this.#tables.get(offset);
    if (table) {
      if (offset !== this.#lastOffset) {
        this.#tables.delete(offset);
        this.#tables.set(offset, table);
        this.#lastOffset = offset;
      }
      return table;
    }
    return this.#load(offset);
  }

  #load(offset: number): Promise<Uint8Array> {
    let pending = this.#loading.get(offset);
    if (!pending) {
      pending = (async () => {
        const table = new Uint8Array(this.#tableSize);
        try {
          await this.#file.read(offset, table);
        } finally {
          this.#loading.delete(offset);
        }
        this.#insert(offset, table);
        return table;
      })();
      this.#loading.set(offset, pending);
    }
    return pending;
  }

  /** A new all-zero table at host `offset` (nothing is read), already marked changed. */
  create(offset: number): Uint8Array {
    const table = new Uint8Array(this.#tableSize);
    this.#insert(offset, table);
    this.#dirty.add(offset);
    return table;
  }

  /** Record that the cached table at `offset` was changed. */
  markDirty(offset: number): void {
    this.#dirty.add(offset);
  }

  /** Forget the table at `offset` (its cluster was freed); a pending change is dropped. */
  drop(offset: number): void {
    this.#tables.delete(offset);
    this.#dirty.delete(offset);
    if (this.#lastOffset === offset) this.#lastOffset = -1;
  }

  /** Write every changed table to the file (no flush); they become evictable. */
  async writeBack(): Promise<void> {
    for (const offset of [...this.#dirty].sort((a, b) => a - b)) {
      const table = this.#tables.get(offset);
      if (table) await this.#file.write(offset, table);
      this.#dirty.delete(offset);
    }
    this.#evict();
  }

  #insert(offset: number, table: Uint8Array): void {
    this.#tables.set(offset, table);
    this.#lastOffset = offset;
    this.#evict();
  }

  #evict(): void {
    if (this.#tables.size <= this.#capacity) return;
    for (const offset of this.#tables.keys()) {
      if (this.#tables.size <= this.#capacity) break;
      if (this.#dirty.has(offset) || offset === this.#lastOffset) continue;
      this.#tables.delete(offset);
    }
  }
}
