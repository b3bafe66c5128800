/** JSON text as qemu-storage-daemon 7.2 writes it (each expected line is qsd output). */

import assert from "node:assert/strict";
import { formatDouble, formatJson, qdictKeys } from "../../src/qmp/json-value.ts";

Deno.test("members come out in QDict order when built in QAPI order", () => {
  assert.equal(
    formatJson({
      QMP: {
        version: { qemu: { major: 7, minor: 2, micro: 22 }, package: "Debian" },
        capabilities: ["oob"],
      },
    }),
    '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, ' +
      '"capabilities": ["oob"]}}',
  );
  assert.equal(formatJson({ return: {}, id: 1n }), '{"return": {}, "id": 1}');
  assert.equal(
    formatJson({ error: { class: "GenericError", desc: "x" }, id: "x" }),
    '{"id": "x", "error": {"class": "GenericError", "desc": "x"}}',
  );
  assert.equal(
    formatJson({
      timestamp: { seconds: 1795327586, microseconds: 197996 },
      event: "BLOCK_EXPORT_DELETED",
      data: { id: "e0" },
    }),
    '{"timestamp": {"seconds": 1795327586, "microseconds": 197996}, ' +
      '"event": "BLOCK_EXPORT_DELETED", "data": {"id": "e0"}}',
  );
  assert.deepEqual(qdictKeys({ execute: 1, id: 1, zzz: 1, aaa: 1, arguments: 1 }), [
    "aaa",
    "execute",
    "zzz",
    "arguments",
    "id",
  ]);
});

Deno.test("insertion order and indentation on request; undefined members are left out", () => {
  assert.equal(
    formatJson({ b: 1, a: [true, null], c: undefined }, { order: "insertion" }),
    '{"b": 1, "a": [true, null]}',
  );
  assert.equal(
    formatJson({ b: { c: [1, 2], d: {} }, a: [] }, { order: "insertion", indent: 4 }),
    '{\n    "b": {\n        "c": [\n            1,\n            2\n        ],\n        "d": {}\n    },\n    "a": []\n}',
  );
});

Deno.test("strings: printable ASCII as is, the rest escaped in upper case", () => {
  assert.equal(
    formatJson(
      "\u007f/<>&'\b\f\n\r\t\u0001\u001f\u2028\u0080\u00ff\u0100\u{10000} \u{1f600}\"\\\0",
    ),
    String
      .raw`"\u007F/<>&'\b\f\n\r\t\u0001\u001F\u2028\u0080\u00FF\u0100\uD800\uDC00 \uD83D\uDE00\"\\\u0000"`,
  );
});

Deno.test("numbers: integers exact, doubles as %.17g", () => {
  assert.equal(
    formatJson([18446744073709551615n, -9223372036854775808n, 7, -3]),
    "[18446744073709551615, -9223372036854775808, 7, -3]",
  );
  const doubles: [number, string][] = [
    [0.1, "0.10000000000000001"],
    [1e20, "1e+20"],
    [1, "1"],
    [-0, "-0"],
    [18446744073709552000, "1.8446744073709552e+19"],
    [Infinity, "inf"],
    [-Infinity, "-inf"],
    [NaN, "nan"],
    [1.5e-7, "1.4999999999999999e-07"],
    [2.5, "2.5"],
    [1e17, "1e+17"],
    [123456.789, "123456.789"],
    [0.0001, "0.0001"],
    [1e-5, "1.0000000000000001e-05"],
  ];
  for (const [value, text] of doubles) assert.equal(formatDouble(value), text, text);
  assert.equal(formatJson([0.1, 2 ** 53 + 2]), "[0.10000000000000001, 9007199254740994]");
});
