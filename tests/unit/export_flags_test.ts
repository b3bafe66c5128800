import assert from "node:assert/strict";
import {
  type ExportFlagInputs,
  NbdExport,
  transmissionFlagsOf,
} from "../../src/nbd/server/export.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import type { NodeCapabilities } from "../../src/block/node.ts";
import { flagNames, NBD_FLAG } from "../../src/nbd/protocol.ts";

const {
  HAS_FLAGS,
  READ_ONLY,
  SEND_FLUSH,
  SEND_FUA,
  SEND_TRIM,
  SEND_WRITE_ZEROES,
  SEND_DF,
  CAN_MULTI_CONN,
  SEND_CACHE,
  SEND_FAST_ZERO,
} = NBD_FLAG;

/** A node that can do nothing special. */
const PLAIN: NodeCapabilities = {
  writable: true,
  trim: false,
  fastZero: false,
  cache: false,
  multiConn: false,
  blockStatus: false,
};

function flagsOf(changes: Partial<ExportFlagInputs>, can: Partial<NodeCapabilities> = {}): string {
  const inputs = { readOnly: false, allowMultiConn: false, structured: false, ...changes };
  return flagNames(NBD_FLAG, transmissionFlagsOf({ ...inputs, can: { ...PLAIN, ...can } }));
}

const name = (flags: number) => flagNames(NBD_FLAG, flags);
const ALWAYS = HAS_FLAGS | SEND_FLUSH | SEND_FUA;
const WRITABLE = ALWAYS | SEND_TRIM | SEND_WRITE_ZEROES;

Deno.test("export flags: QEMU's choices where the node has nothing to offer", () => {
  assert.equal(flagsOf({}), name(WRITABLE), "flush, FUA, trim and zero on any writable export");
  assert.equal(flagsOf({ readOnly: true }), name(ALWAYS | READ_ONLY), "flush and FUA read-only");
  assert.equal(flagsOf({ structured: true }), name(WRITABLE | SEND_DF));
});

Deno.test("export flags: each capability turns on its flag and no other", () => {
  const cases: [Partial<NodeCapabilities>, Partial<ExportFlagInputs>, number][] = [
    [{ fastZero: true }, {}, WRITABLE | SEND_FAST_ZERO],
    [{ fastZero: true }, { readOnly: true }, ALWAYS | READ_ONLY],
    [{ cache: true }, {}, WRITABLE | SEND_CACHE],
    [{ cache: true }, { readOnly: true }, ALWAYS | READ_ONLY | SEND_CACHE],
    [{ multiConn: true }, {}, WRITABLE],
    [{ multiConn: true }, { allowMultiConn: true }, WRITABLE | CAN_MULTI_CONN],
    [{}, { allowMultiConn: true }, WRITABLE],
    [{ trim: true }, {}, WRITABLE],
    [{ blockStatus: true }, {}, WRITABLE],
    [{ writable: false }, { readOnly: true }, ALWAYS | READ_ONLY],
  ];
  for (const [can, inputs, expected] of cases) {
    assert.equal(flagsOf(inputs, can), name(expected), JSON.stringify({ can, inputs }));
  }
});

Deno.test("export flags: an export reads its node's capabilities once", () => {
  let reads = 0;
  const node = new MemoryNode(1 << 20);
  const can = node.capabilities;
  Object.defineProperty(node, "capabilities", { get: () => (reads++, can) });
  const exported = new NbdExport({ name: "", node, readOnly: true, allowMultiConn: true });
  assert.equal(reads, 1);
  assert.equal(
    name(exported.transmissionFlags(true)),
    name(ALWAYS | READ_ONLY | SEND_DF | CAN_MULTI_CONN),
  );
  assert.equal(name(exported.transmissionFlags(false)), name(ALWAYS | READ_ONLY | CAN_MULTI_CONN));
  assert.equal(exported.sparseReads, true);
  assert.equal(exported.readOnly, true);
  assert.equal(reads, 1);
});
