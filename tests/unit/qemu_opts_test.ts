/**
 * QEMU's QemuOpts syntax, as qsd parses `--chardev`. Every message below was
 * recorded from qemu-storage-daemon 7.2.22 (Debian) given the same string as
 * `--chardev`; the last test replays the error cases against the real qsd
 * when it is installed.
 */
import assert from "node:assert/strict";
import { KeyvalError } from "../../src/qmp/keyval.ts";
import { ID_HINT, isWellFormedId, parseQemuOpts } from "../../src/qmp/qemu-opts.ts";
import { isHexSizeWithSuffix, parseCInteger, parseSize } from "../../src/qmp/c-number.ts";
import { parseChardevOptions } from "../../src/cli/chardev.ts";
import { QSD, qsdAvailable, runQsd } from "./qsd_option.ts";

Deno.test("qemuopts: the implied backend, id, names and values", () => {
  const r = parseChardevOptions("socket,id=c0,path=/tmp/q.sock,server=on,wait=off");
  assert.equal(r.id, "c0");
  assert.equal(r.help, false);
  assert.deepEqual(r.warnings, []);
  assert.deepEqual(r.opts, [
    { name: "backend", value: "socket" },
    { name: "path", value: "/tmp/q.sock" },
    { name: "server", value: "on" },
    { name: "wait", value: "off" },
  ]);
  assert.deepEqual(r.values, {
    backend: "socket",
    path: "/tmp/q.sock",
    server: "on",
    wait: "off",
  });
});

Deno.test("qemuopts: the first id and the last value win; ',,' works everywhere", () => {
  const r = parseChardevOptions("socket,id=c9,id=c8,path=/a,path=/b,backend=null");
  assert.equal(r.id, "c9");
  assert.deepEqual(r.values, { backend: "null", path: "/b" });
  assert.equal(r.opts.length, 4);
  assert.deepEqual(parseChardevOptions("soc,,ket,id=c0").values, { backend: "soc,ket" });
  assert.deepEqual(parseChardevOptions("socket,id=c0,path=/tmp/q,,x").values, {
    backend: "socket",
    path: "/tmp/q,x",
  });
  assert.deepEqual(parseChardevOptions(",id=c9").values, { backend: "" });
  assert.deepEqual(parseChardevOptions(""), {
    id: undefined,
    opts: [],
    values: {},
    help: false,
    warnings: [],
  });
  assert.deepEqual(parseChardevOptions("id=c0,path=/x").values, { path: "/x" });
});

Deno.test("qemuopts: short-form booleans work with a deprecation warning", () => {
  const r = parseChardevOptions("socket,id=c0,path=/tmp/q.sock,server,nowait");
  assert.deepEqual(r.values, { backend: "socket", path: "/tmp/q.sock", server: "on", wait: "off" });
  assert.deepEqual(r.warnings, [
    {
      message: "short-form boolean option 'server' deprecated",
      hint: "Please use server=on instead",
    },
    {
      message: "short-form boolean option 'nowait' deprecated",
      hint: "Please use wait=off instead",
    },
  ]);
  // "delay" earns advice about nodelay, both ways round.
  assert.deepEqual(parseChardevOptions("null,id=c,nodelay").warnings, [
    {
      message: "short-form boolean option 'nodelay' deprecated",
      hint: "Please use nodelay=on instead",
    },
  ]);
  assert.deepEqual(parseChardevOptions("null,id=c,delay").warnings, [
    {
      message: "short-form boolean option 'delay' deprecated",
      hint: "Please use nodelay=off instead",
    },
  ]);
  // A flag named "noid" sets the id to "off" (QEMU does the same).
  assert.equal(parseChardevOptions("null,noid").id, "off");
});

Deno.test("qemuopts: help or ? stops parsing; as the first element it is the backend", () => {
  const r = parseChardevOptions("socket,id=c0,server,help,bogus=1");
  assert.equal(r.help, true);
  assert.equal(r.warnings.length, 1);
  assert.equal(parseChardevOptions("socket,?").help, true);
  assert.deepEqual(parseChardevOptions("help"), {
    id: undefined,
    opts: [{ name: "backend", value: "help" }],
    values: { backend: "help" },
    help: false,
    warnings: [],
  });
});

/** [input, message, hint, number of warnings printed before it]; checked against qsd 7.2. */
const CHARDEV_ERRORS: [string, string, string | undefined, number][] = [
  ["socket,id=1c,path=/tmp/x", "Parameter 'id' expects an identifier", ID_HINT, 0],
  ["null,id=,server=on", "Parameter 'id' expects an identifier", ID_HINT, 0],
  ["socket,id=c9,,x,path=/tmp/x", "Parameter 'id' expects an identifier", ID_HINT, 0],
  ["null,server,id=1x", "Parameter 'id' expects an identifier", ID_HINT, 0],
  ["socket,id=c0,path=/tmp/x,bogus=1", "Invalid parameter 'bogus'", undefined, 0],
  ["null,id=c9,=x", "Invalid parameter ''", undefined, 0],
  ["null,id=c9,a.b=x", "Invalid parameter 'a.b'", undefined, 0],
  ["null,id=c9,bogus=1,server=maybe", "Invalid parameter 'bogus'", undefined, 0],
  ["null,server,bogus=1", "Invalid parameter 'bogus'", undefined, 1],
  ["null,id=c9,bogus", "Invalid parameter 'bogus'", undefined, 1],
  ["null,id=c9,nobogus", "Invalid parameter 'bogus'", undefined, 1],
  ["id=c9,socket", "Invalid parameter 'socket'", undefined, 1],
  ["null,id=c9,server=maybe", "Parameter 'server' expects 'on' or 'off'", undefined, 0],
  ["null,id=c9,server=1", "Parameter 'server' expects 'on' or 'off'", undefined, 0],
  ["null,id=c9,server=", "Parameter 'server' expects 'on' or 'off'", undefined, 0],
  ["null,id=c9,wait=off,,", "Parameter 'wait' expects 'on' or 'off'", undefined, 0],
  ["null,id=c9,reconnect=abc", "Parameter 'reconnect' expects a number", undefined, 0],
  ["null,id=c9,reconnect=", "Parameter 'reconnect' expects a number", undefined, 0],
  ["null,id=c9,reconnect=08", "Parameter 'reconnect' expects a number", undefined, 0],
  [
    "null,id=c9,reconnect=18446744073709551616",
    "Value '18446744073709551616' is too large for parameter 'reconnect'",
    undefined,
    0,
  ],
  [
    "null,id=c9,size=abc",
    "Parameter 'size' expects a non-negative number below 2^64",
    "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n" +
    "and exabytes, respectively.",
    0,
  ],
  ["null,id=c9,size=16E", "Value '16E' is out of range for parameter 'size'", undefined, 0],
];

Deno.test("qemuopts: every error carries QEMU's message, hint and earlier warnings", () => {
  for (const [text, message, hint, warnings] of CHARDEV_ERRORS) {
    try {
      parseChardevOptions(text);
      assert.fail(`no error for ${text}`);
    } catch (e) {
      assert.ok(e instanceof KeyvalError, `${text}: ${e}`);
      assert.equal(e.message, message, text);
      assert.equal(e.hint, hint, text);
      assert.equal(e.warnings.length, warnings, text);
    }
  }
});

Deno.test("qemuopts: without types anything goes", () => {
  assert.deepEqual(parseQemuOpts("a=1,b.c=2,flag").values, { a: "1", "b.c": "2", flag: "on" });
});

Deno.test("qemuopts: numbers are qemu_strtou64 (base 0, a minus wraps)", () => {
  assert.equal(parseCInteger("0", "unsigned"), 0n);
  assert.equal(parseCInteger(" 1", "unsigned"), 1n);
  assert.equal(parseCInteger("+1", "unsigned"), 1n);
  assert.equal(parseCInteger("010", "unsigned"), 8n);
  assert.equal(parseCInteger("0x1F", "unsigned"), 31n);
  assert.equal(parseCInteger("-1", "unsigned"), 18446744073709551615n);
  assert.equal(parseCInteger("-18446744073709551615", "unsigned"), 1n);
  assert.equal(parseCInteger("18446744073709551615", "unsigned"), 18446744073709551615n);
  assert.equal(parseCInteger("18446744073709551616", "unsigned"), "range");
  assert.equal(parseCInteger("-18446744073709551616", "unsigned"), "range");
  for (const bad of ["", "0x", "08", "1 ", "1k", "abc", "--1"]) {
    assert.equal(parseCInteger(bad, "unsigned"), "invalid", bad);
  }
});

Deno.test("qemuopts: sizes are qemu_strtosz (decimal, fractions, suffixes, hex)", () => {
  const ok: [string, bigint][] = [
    ["0x10", 16n],
    ["1b", 1n],
    ["1B", 1n],
    [" 1k", 1024n],
    ["1K", 1024n],
    ["1.k", 1024n],
    ["+1k", 1024n],
    ["1.0", 1n],
    ["0.5k", 512n],
    ["1.5k", 1536n],
    ["08", 8n],
    ["010k", 10240n],
    ["15E", 15n << 60n],
    ["1.0000000000000000001k", 1024n],
    ["18446744073709551615", 18446744073709551615n],
  ];
  for (const [text, size] of ok) {
    assert.equal(parseSize(text), size, text);
    assert.equal(isHexSizeWithSuffix(text), false, text);
  }
  assert.equal(parseSize("0x10k"), 16384n);
  assert.equal(isHexSizeWithSuffix("0x10k"), true, "accepted with QEMU's deprecation warning");
  for (const bad of ["", "1.5", "0x1.8k", ".5k", "1e3", "1 k", "1kb", "-0", "-1", "1.5e3k"]) {
    assert.equal(parseSize(bad), "invalid", bad);
  }
  for (const bad of ["99999999999999999999k", "99999999999999999999.5k", "0x1ffffffffffffffffk"]) {
    assert.equal(parseSize(bad), "invalid", bad);
  }
  for (const big of ["16E", "99999999999999999999", "0x1ffffffffffffffff"]) {
    assert.equal(parseSize(big), "range", big);
  }
});

Deno.test("qemuopts: well-formed ids", () => {
  for (const id of ["c0", "a", "A-b.c_d", "x9"]) assert.equal(isWellFormedId(id), true, id);
  for (const id of ["", "1c", "-a", "_a", "a,b", "a b", "é"]) {
    assert.equal(isWellFormedId(id), false, id);
  }
});

// --- The same strings against the real qemu-storage-daemon -----------------

Deno.test({
  name: "qemuopts: qemu-storage-daemon 7.2 prints the same warnings and messages",
  ignore: !qsdAvailable(),
  fn: async () => {
    for (const [text] of CHARDEV_ERRORS) {
      let expected = "";
      try {
        parseChardevOptions(text);
      } catch (e) {
        if (!(e instanceof KeyvalError)) throw e;
        const prefix = `${QSD}: --chardev ${text}: `;
        for (const w of e.warnings) {
          expected += `${prefix}warning: ${w.message}\n${w.hint ? w.hint + "\n" : ""}`;
        }
        expected += `${prefix}${e.message}\n${e.hint ? e.hint + "\n" : ""}`;
      }
      const { code, stderr } = await runQsd("--chardev", text);
      assert.equal(code, 1, text);
      assert.equal(stderr, expected);
    }
  },
});
