/**
 * A layered test node, standing in for qcow2 until it exists: a memory node
 * that holds only the granules written to it and reads the rest from its
 * backing child (zeroes past the backing's end, or without one), with block
 * status saying `allocated: false` where it holds nothing.
 */
import { MemoryNode } from "../../src/block/memory.ts";
import type { BlockExtent, BlockNode, NodeChild, ZeroOptions } from "../../src/block/node.ts";

/** A memory node with a backing child; unwritten granules fall through to it. */
export class LayeredNode extends MemoryNode {
  override readonly children: readonly NodeChild[];
  readonly #granule: number;
  readonly #held = new Set<number>();
  readonly #backing: BlockNode | undefined;

  /** A node of `size` bytes holding nothing yet, over `backing` (if any), allocating `granule`s. */
  constructor(size: number, backing: BlockNode | undefined, granule = 512) {
    super(size);
    this.#granule = granule;
    this.#backing = backing;
    this.children = backing ? [{ role: "backing", node: backing }] : [];
  }

  protected override async driverWrite(offset: number, data: Uint8Array): Promise<void> {
    await this.#fillPartialGranules(offset, data.length);
    await super.driverWrite(offset, data);
  }

  protected override async driverWriteZeroes(
    offset: number,
    length: number,
    options: ZeroOptions,
  ): Promise<void> {
    await this.#fillPartialGranules(offset, length);
    await super.driverWriteZeroes(offset, length, options);
  }

  protected override async driverRead(offset: number, into: Uint8Array): Promise<void> {
    for (const run of this.#runs(offset, into.length)) {
      const part = into.subarray(run.at - offset, run.at - offset + run.length);
      if (run.held) await super.driverRead(run.at, part);
      else await this.#readBacking(run.at, part);
    }
  }

  protected override driverBlockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return Promise.resolve(
      this.#runs(offset, length).map((run) => ({
        length: run.length,
        data: run.held,
        zero: false,
        allocated: run.held,
      })),
    );
  }

  async #readBacking(offset: number, into: Uint8Array): Promise<void> {
    into.fill(0);
    const backing = this.#backing;
    if (!backing || offset >= backing.size) return;
    await backing.read(offset, into.subarray(0, Math.min(into.length, backing.size - offset)));
  }

  /** Copy the backing's bytes into granules a change covers only partly, then hold them all. */
  async #fillPartialGranules(offset: number, length: number): Promise<void> {
    const first = Math.floor(offset / this.#granule);
    const last = Math.floor((offset + length - 1) / this.#granule);
    for (let index = first; index <= last && length > 0; index++) {
      if (this.#held.has(index)) continue;
      const at = index * this.#granule;
      const bytes = new Uint8Array(Math.min(this.#granule, this.size - at));
      await this.#readBacking(at, bytes);
      await super.driverWrite(at, bytes);
      this.#held.add(index);
    }
  }

  /** Runs of granules held or not, clipped to the range. */
  #runs(offset: number, length: number): { at: number; length: number; held: boolean }[] {
    const runs: { at: number; length: number; held: boolean }[] = [];
    for (let at = offset; at < offset + length;) {
      const index = Math.floor(at / this.#granule);
      const stop = Math.min(offset + length, (index + 1) * this.#granule);
      const held = this.#held.has(index);
      const last = runs.at(-1);
      if (last && last.held === held) last.length += stop - at;
      else runs.push({ at, length: stop - at, held });
      at = stop;
    }
    return runs;
  }
}
