/**
 * Input validation with qemu-storage-daemon 7.2's messages, in both modes.
 * Every expected message below was observed on qsd 7.2 (QMP for json mode,
 * command-line options for keyval mode) with the same input.
 */

import assert from "node:assert/strict";
import { DenbdError } from "../../src/errors.ts";
import { type InputMode, validateInput } from "../../src/qmp/input.ts";
import { JsonStreamParser } from "../../src/qmp/json-stream.ts";
import type { JsonValue } from "../../src/qmp/json-value.ts";
import { qmpCapabilities } from "../../src/qmp/core-commands.ts";
import {
  BUILTIN,
  enumeration,
  member,
  optional,
  type QapiType,
  struct,
  union,
} from "../../src/qmp/schema.ts";
import {
  BlockdevOptions,
  BlockDirtyBitmapAdd,
  BlockExportOptions,
  NbdServerOptions,
  NbdServerStartArguments as NbdServerStart,
} from "../../src/daemon/qapi-types.ts";

const { int } = BUILTIN;

/** Parse JSON text the way the monitor does (integers become bigints). */
function json(text: string): JsonValue {
  const [item] = new JsonStreamParser().feed(new TextEncoder().encode(text + "\n"));
  assert.ok(item && "value" in item, `bad JSON in test: ${text}`);
  return item.value;
}

/** `input` is refused with exactly `message`. */
function refuses(type: QapiType, input: JsonValue, mode: InputMode, message: string): void {
  assert.throws(
    () => validateInput(type, input, mode),
    (error: unknown) => {
      assert.ok(error instanceof DenbdError);
      assert.equal(error.kind, "invalid");
      assert.equal(error.message, message);
      return true;
    },
  );
}

const INET = '"addr": {"type": "inet", "data": {"host": "127.0.0.1", "port": "1"}}';

Deno.test("json: nested structs and unions are named by their path", () => {
  const cases: [string, string][] = [
    ["{}", "Parameter 'addr' is missing"],
    ['{"addr": {}}', "Parameter 'addr.type' is missing"],
    ['{"addr": {"type": "inet"}}', "Parameter 'addr.data' is missing"],
    ['{"addr": {"type": "inet", "data": {}}}', "Parameter 'addr.data.host' is missing"],
    ['{"addr": {"type": "foo"}}', "Parameter 'type' does not accept value 'foo'"],
    ['{"addr": {"type": 1}}', "Invalid parameter type for 'addr.type', expected: string"],
    ['{"addr": "x"}', "Invalid parameter type for 'addr', expected: object"],
    [
      '{"addr": {"type": "inet", "data": {"host": 1}}}',
      "Invalid parameter type for 'addr.data.host', expected: string",
    ],
    [
      '{"addr": {"type": "inet", "data": {"host": "h", "port": "1", "x": 1}}}',
      "Parameter 'addr.data.x' is unexpected",
    ],
    [
      '{"addr": {"type": "inet", "data": {"host": "h", "port": "1"}, "y": 2}}',
      "Parameter 'addr.y' is unexpected",
    ],
    [`{${INET}, "z": 2}`, "Parameter 'z' is unexpected"],
    ['{"z": 2}', "Parameter 'addr' is missing"],
    [
      '{"addr": {"type": "inet", "data": {"host": "h", "port": 1}}}',
      "Invalid parameter type for 'addr.data.port', expected: string",
    ],
    [
      '{"addr": {"type": "inet", "data": {"host": "h", "port": "1", "ipv4": "yes"}}}',
      "Invalid parameter type for 'addr.data.ipv4', expected: boolean",
    ],
    [`{${INET}, "tls-creds": null}`, "Invalid parameter type for 'tls-creds', expected: string"],
  ];
  for (const [input, message] of cases) refuses(NbdServerStart, json(input), "json", message);
});

Deno.test("json: unsigned integers, range vs type errors", () => {
  const cases: [string, string][] = [
    ["-1", "Parameter 'max-connections' expects uint32_t"],
    ["4294967296", "Parameter 'max-connections' expects uint32_t"],
    ["18446744073709551615", "Parameter 'max-connections' expects uint32_t"],
    ["1.5", "Parameter 'max-connections' expects uint64"],
    ['"3"', "Parameter 'max-connections' expects uint64"],
    ["18446744073709551616", "Parameter 'max-connections' expects uint64"],
    ["-9223372036854775809", "Parameter 'max-connections' expects uint64"],
    ["1e3", "Parameter 'max-connections' expects uint64"],
    ["2.0", "Parameter 'max-connections' expects uint64"],
    ["true", "Parameter 'max-connections' expects uint64"],
    ["null", "Parameter 'max-connections' expects uint64"],
  ];
  for (const [value, message] of cases) {
    refuses(NbdServerStart, json(`{${INET}, "max-connections": ${value}}`), "json", message);
  }
  const granularity: [string, string][] = [
    ["1.5", "Parameter 'granularity' expects uint64"],
    ['"3"', "Parameter 'granularity' expects uint64"],
    ["9223372036854775808", "Parameter 'granularity' expects uint32_t"],
    ["-9223372036854775808", "Parameter 'granularity' expects uint32_t"],
    ["2.0", "Parameter 'granularity' expects uint64"],
  ];
  for (const [value, message] of granularity) {
    const input = json(`{"node": "n", "name": "b", "granularity": ${value}}`);
    refuses(BlockDirtyBitmapAdd, input, "json", message);
  }
  refuses(
    BlockDirtyBitmapAdd,
    json('{"node": "n", "name": "b", "persistent": "on"}'),
    "json",
    "Invalid parameter type for 'persistent', expected: boolean",
  );
  refuses(
    BlockDirtyBitmapAdd,
    json('{"name": "b", "x": 1}'),
    "json",
    "Parameter 'node' is missing",
  );
});

Deno.test("json: flat unions, lists and alternates", () => {
  const nbd = '"type": "nbd", "id": "e", "node-name": "n"';
  const vhost = '"type": "vhost-user-blk", "id": "e", "node-name": "n", ' +
    '"addr": {"type": "unix", "path": "/x"}';
  const cases: [string, string][] = [
    ["{}", "Parameter 'type' is missing"],
    ['{"type": "nbd"}', "Parameter 'id' is missing"],
    [`{${nbd}, "bitmaps": "x"}`, "Invalid parameter type for 'bitmaps', expected: array"],
    [
      `{${nbd}, "bitmaps": [1]}`,
      "Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr",
    ],
    [
      `{${nbd}, "bitmaps": ["a", {"node": 1, "name": "x"}]}`,
      "Invalid parameter type for 'bitmaps[1].node', expected: string",
    ],
    [`{${nbd}, "bitmaps": ["a", {"node": "x"}]}`, "Parameter 'bitmaps[1].name' is missing"],
    [
      `{${nbd}, "bitmaps": ["a", {"node": "x", "name": "y", "q": 1}]}`,
      "Parameter 'bitmaps[1].q' is unexpected",
    ],
    [
      `{${nbd}, "fixed-iothread": "yes"}`,
      "Invalid parameter type for 'fixed-iothread', expected: boolean",
    ],
    [`{${nbd}, "x": 1}`, "Parameter 'x' is unexpected"],
    [`{${vhost}, "num-queues": 70000}`, "Parameter 'num-queues' expects uint16_t"],
    [`{${vhost}, "num-queues": -1}`, "Parameter 'num-queues' expects uint16_t"],
    [`{${vhost}, "logical-block-size": "512"}`, "Parameter 'logical-block-size' expects uint64"],
    [
      '{"type": "vhost-user-blk", "id": "e", "node-name": "n", "addr": {"type": "unix"}}',
      "Parameter 'addr.path' is missing",
    ],
    [
      '{"type": "vhost-user-blk", "id": "e", "node-name": "n", "addr": {"type": "bad"}}',
      "Parameter 'type' does not accept value 'bad'",
    ],
  ];
  for (const [input, message] of cases) refuses(BlockExportOptions, json(input), "json", message);
  refuses(
    BlockdevOptions,
    json('{"driver": "raw", "node-name": "n", "file": 1}'),
    "json",
    "Invalid parameter type for 'file', expected: BlockdevRef",
  );
  refuses(
    BlockdevOptions,
    json('{"driver": "raw", "node-name": "n", "file": "f", "size": "1"}'),
    "json",
    "Invalid parameter type for 'size', expected: integer",
  );
});

Deno.test("json: enum lists (qmp_capabilities)", () => {
  const cases: [string, string][] = [
    ['{"enable": ["foo"]}', "Parameter 'null' does not accept value 'foo'"],
    ['{"enable": "oob"}', "Invalid parameter type for 'enable', expected: array"],
    ['{"enable": [1]}', "Invalid parameter type for 'enable[0]', expected: string"],
    ['{"enable": null}', "Invalid parameter type for 'enable', expected: array"],
    ['{"x": 1}', "Parameter 'x' is unexpected"],
  ];
  for (const [input, message] of cases) {
    refuses(qmpCapabilities.args, json(input), "json", message);
  }
  assert.deepEqual(validateInput(qmpCapabilities.args, json('{"enable": ["oob"]}')), {
    enable: ["oob"],
  });
});

Deno.test("json: of several unexpected members, the one QEMU's hash table yields", () => {
  refuses(
    BlockDirtyBitmapAdd,
    json('{"node": "n", "x": 1, "y": 2, "name": "b"}'),
    "json",
    "Parameter 'y' is unexpected",
  );
});

Deno.test("json: valid input comes back typed, with unsigned wrap-around", () => {
  const input = json(
    `{"type": "vhost-user-blk", "id": "e", "node-name": "n", ` +
      `"addr": {"type": "inet", "host": "::1", "port": "9"}, "logical-block-size": -1, ` +
      `"num-queues": 4, "writable": true}`,
  );
  assert.deepEqual(validateInput(BlockExportOptions, input), {
    type: "vhost-user-blk",
    id: "e",
    "node-name": "n",
    writable: true,
    addr: { type: "inet", host: "::1", port: "9" },
    "logical-block-size": 2 ** 64,
    "num-queues": 4,
  });
  assert.deepEqual(
    validateInput(
      BlockExportOptions,
      json(
        `{"type": "nbd", "id": "e", "node-name": "n", "bitmaps": ["a", {"node": "x", ` +
          `"name": "y"}]}`,
      ),
    ),
    { type: "nbd", id: "e", "node-name": "n", bitmaps: ["a", { node: "x", name: "y" }] },
  );
  assert.deepEqual(
    validateInput(BlockdevOptions, json('{"driver": "raw", "file": "f", "size": -5}')),
    { driver: "raw", file: "f", size: -5 },
  );
  assert.deepEqual(validateInput(BUILTIN.any, json('{"a": [1, 2.5]}')), { a: [1n, 2.5] });
});

const KEYVAL_INET = { type: "inet", host: "127.0.0.1", port: "1" };

Deno.test("keyval: integers are C integers, range errors name the member bare", () => {
  const cases: [string, string | number][] = [
    ["x", "Parameter 'max-connections' expects integer"],
    ["4294967296", "Parameter 'max-connections' expects uint32_t"],
    ["-1", "Parameter 'max-connections' expects uint32_t"],
    ["1.5", "Parameter 'max-connections' expects integer"],
    ["18446744073709551616", "Parameter 'max-connections' expects integer"],
    ["", "Parameter 'max-connections' expects integer"],
    ["5 ", "Parameter 'max-connections' expects integer"],
    ["08", "Parameter 'max-connections' expects integer"],
    ["0x", "Parameter 'max-connections' expects integer"],
    ["0x10", 16],
    ["010", 8],
    [" 5", 5],
    ["+5", 5],
    ["-0", 0],
  ];
  for (const [text, expected] of cases) {
    const input = { addr: KEYVAL_INET, "max-connections": text };
    if (typeof expected === "string") refuses(NbdServerOptions, input, "keyval", expected);
    else {
      const result = validateInput(NbdServerOptions, input, "keyval");
      assert.equal(result["max-connections"], expected, text);
    }
  }
  refuses(
    BlockdevOptions,
    { driver: "raw", "node-name": "n", file: "f", size: "9223372036854775808" },
    "keyval",
    "Parameter 'size' expects integer",
  );
  assert.deepEqual(
    validateInput(
      BlockdevOptions,
      { driver: "raw", file: "f", size: "-9223372036854775808" },
      "keyval",
    ),
    { driver: "raw", file: "f", size: -(2 ** 63) },
  );
});

Deno.test("keyval: booleans take on/off, yes/no, true/false, y/n", () => {
  for (const [text, value] of Object.entries({ on: true, yes: true, true: true, y: true })) {
    assert.deepEqual(
      validateInput(BlockDirtyBitmapAdd, { node: "n", name: "b", persistent: text }, "keyval"),
      { node: "n", name: "b", persistent: value },
    );
  }
  for (const text of ["off", "no", "false", "n"]) {
    const result = validateInput(
      BlockDirtyBitmapAdd,
      { node: "n", name: "b", disabled: text },
      "keyval",
    );
    assert.equal(result.disabled, false);
  }
  for (const text of ["Y", "ON", "1", "0", ""]) {
    refuses(
      BlockDirtyBitmapAdd,
      { node: "n", name: "b", persistent: text },
      "keyval",
      "Parameter 'persistent' expects 'on' or 'off'",
    );
  }
  refuses(
    NbdServerOptions,
    { addr: { ...KEYVAL_INET, ipv4: "x" } },
    "keyval",
    "Parameter 'addr.ipv4' expects 'on' or 'off'",
  );
});

Deno.test("keyval: sizes take suffixes, fractions and hex like qemu_strtosz", () => {
  const accepted: [string, number][] = [
    ["512", 512],
    ["1k", 1024],
    ["1K", 1024],
    ["1.5k", 1536],
    ["0x200", 512],
    ["15E", 15 * 2 ** 60],
    ["1b", 1],
    ["1B", 1],
    [" 512", 512],
    ["0.5k", 512],
    ["1.k", 1024],
    ["1T", 2 ** 40],
    ["010", 10],
    ["18446744073709551615", 2 ** 64],
    ["0x10k", 16384],
  ];
  const vhost = { type: "vhost-user-blk", id: "e", "node-name": "n", addr: { type: "unix" } };
  for (const [text, value] of accepted) {
    const input = { ...vhost, addr: { type: "unix", path: "/x" }, "logical-block-size": text };
    const result = validateInput(BlockExportOptions, input, "keyval");
    assert.ok(result.type === "vhost-user-blk");
    assert.equal(result["logical-block-size"], value, text);
  }
  for (
    const text of ["1e3", "-1", "16E", "1kb", "", "1.5", "18446744073709551616", " 1 k", "1 k"]
  ) {
    refuses(
      BlockExportOptions,
      { ...vhost, addr: { type: "unix", path: "/x" }, "logical-block-size": text },
      "keyval",
      "Parameter 'logical-block-size' expects size",
    );
  }
});

Deno.test("keyval: structure errors, lists and alternates", () => {
  const cases: [QapiType, Record<string, JsonValue>, string][] = [
    [NbdServerOptions, { addr: { type: "foo" } }, "Parameter 'type' does not accept value 'foo'"],
    [NbdServerOptions, { addr: { type: "inet" } }, "Parameter 'addr.host' is missing"],
    [NbdServerOptions, { addr: { x: "inet" } }, "Parameter 'addr.type' is missing"],
    [NbdServerOptions, { addr: "inet" }, "Invalid parameter type for 'addr', expected: object"],
    [NbdServerOptions, { x: "1" }, "Parameter 'addr' is missing"],
    [NbdServerOptions, { addr: { ...KEYVAL_INET, q: "1" } }, "Parameter 'addr.q' is unexpected"],
    [NbdServerOptions, { addr: KEYVAL_INET, q: "1" }, "Parameter 'q' is unexpected"],
    [
      NbdServerOptions,
      { addr: KEYVAL_INET, "max-connections": { a: "1" } },
      "Parameters 'max-connections.*' are unexpected",
    ],
    [
      NbdServerOptions,
      { addr: { ...KEYVAL_INET, ipv4: { x: "1" } } },
      "Parameters 'addr.ipv4.*' are unexpected",
    ],
    [
      NbdServerOptions,
      { addr: { ...KEYVAL_INET, host: { x: "127.0.0.1" } } },
      "Parameters 'addr.host.*' are unexpected",
    ],
    [
      BlockExportOptions,
      { type: "nbd", id: "e", "node-name": "n", bitmaps: "a" },
      "Invalid parameter type for 'bitmaps', expected: array",
    ],
    [
      BlockExportOptions,
      { type: "nbd", id: "e", "node-name": "n", bitmaps: { x: "a" } },
      "Invalid parameter type for 'bitmaps', expected: array",
    ],
    [
      BlockExportOptions,
      { type: "nbd", id: "e", "node-name": "n", bitmaps: [{ node: "x" }] },
      "Parameter 'bitmaps.0.name' is missing",
    ],
    [
      BlockExportOptions,
      { type: "nbd", id: "e", "node-name": "n", bitmaps: [{ node: "x", name: "y", q: "1" }] },
      "Parameter 'bitmaps.0.q' is unexpected",
    ],
    [
      BlockExportOptions,
      { type: "nbd", id: "e", "node-name": "n", bitmaps: [{ node: "x", name: "y" }, { q: "1" }] },
      "Parameter 'bitmaps.1.node' is missing",
    ],
    [
      BlockExportOptions,
      { type: "nbd", id: "e", "node-name": "n", bitmaps: [{ node: { x: "x" }, name: "y" }] },
      "Parameters 'bitmaps.0.node.*' are unexpected",
    ],
    [
      BlockExportOptions,
      { type: "nbd", id: "e", "node-name": "n", "allocation-depth": "maybe" },
      "Parameter 'allocation-depth' expects 'on' or 'off'",
    ],
    [BlockExportOptions, { type: "nbd", id: "e" }, "Parameter 'node-name' is missing"],
    [
      BlockExportOptions,
      { type: "nbdx", id: "e" },
      "Parameter 'type' does not accept value 'nbdx'",
    ],
    [BlockExportOptions, { id: "e" }, "Parameter 'type' is missing"],
    [BlockExportOptions, { type: { x: "nbd" }, id: "e" }, "Parameters 'type.*' are unexpected"],
    [
      BlockExportOptions,
      { type: "nbd", id: "e", "node-name": "n", name: { x: "1" } },
      "Parameters 'name.*' are unexpected",
    ],
    [
      BlockExportOptions,
      {
        type: "vhost-user-blk",
        id: "e",
        "node-name": "n",
        addr: { type: "unix", path: "/x" },
        "num-queues": "70000",
      },
      "Parameter 'num-queues' expects uint16_t",
    ],
    [
      BlockdevOptions,
      { driver: "raw", "node-name": "n", file: ["a"] },
      "Invalid parameter type for 'file', expected: BlockdevRef",
    ],
    [
      BlockdevOptions,
      { driver: "raw", "node-name": "n", file: { driver: "file", filename: "f", x: "1" } },
      "Parameter 'file.x' is unexpected",
    ],
    [
      BlockdevOptions,
      { driver: "file", "node-name": "n", filename: "f", x: "1", y: "2" },
      "Parameter 'y' is unexpected",
    ],
  ];
  for (const [type, input, message] of cases) refuses(type, input, "keyval", message);
  assert.deepEqual(
    validateInput(BlockExportOptions, {
      type: "nbd",
      id: "e",
      "node-name": "n",
      bitmaps: ["a", { node: "x", name: "y" }],
    }, "keyval"),
    { type: "nbd", id: "e", "node-name": "n", bitmaps: ["a", { node: "x", name: "y" }] },
  );
  assert.deepEqual(
    validateInput(BlockdevOptions, { driver: "raw", file: "disk" }, "keyval"),
    { driver: "raw", file: "disk" },
  );
});

Deno.test("input: a union value denbd does not model takes any members, unchecked", () => {
  const Kind = enumeration("Kind", ["known", "foreign"]);
  const Thing = union("Thing", [member("kind", Kind)], "kind", {
    known: struct("Known", [optional("size", int)]),
  }, ["foreign"]);
  assert.deepEqual(
    validateInput(Thing, json('{"kind": "foreign", "size": "big", "x": [1]}'), "json"),
    { kind: "foreign", size: "big", x: [1n] },
  );
  refuses(Thing, json('{"kind": "known", "x": 1}'), "json", "Parameter 'x' is unexpected");
});
