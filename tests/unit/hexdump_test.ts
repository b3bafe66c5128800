import assert from "node:assert/strict";
import { Hexdump } from "../../src/cli/hexdump.ts";

const decoder = new TextDecoder();

/** Dump `bytes` of an export of `size` bytes, fed in `pieces` ("z" pieces as zeroes). */
function dump(bytes: Uint8Array, size: number, pieces: number[] = [bytes.length]): string {
  const hexdump = new Hexdump(size);
  let text = "";
  let at = 0;
  for (const length of pieces) {
    const piece = bytes.subarray(at, at + length);
    text += decoder.decode(
      piece.every((byte) => byte === 0) ? hexdump.zeroes(length) : hexdump.data(piece),
    );
    at += length;
  }
  return text + decoder.decode(hexdump.end());
}

/** nbddump's algorithm, line by line, as the reference. */
function reference(bytes: Uint8Array, size: number): string {
  let out = "";
  let last: Uint8Array | null = null;
  let splat = false;
  for (let offset = 0; offset < bytes.length; offset += 16) {
    const line = new Uint8Array(16);
    line.set(bytes.subarray(offset, offset + 16));
    const valid = Math.min(16, bytes.length - offset);
    if (offset > 0 && offset + 16 < size && last && line.every((b, i) => b === last![i])) {
      if (!splat) out += "*\n";
      splat = true;
      continue;
    }
    splat = false;
    last = line;
    let hex = "";
    let ascii = "";
    for (let i = 0; i < 16; i++) {
      hex += i < valid ? `${line[i].toString(16).padStart(2, "0")} ` : "   ";
      if (i === 7) hex += " ";
      ascii += i >= valid
        ? " "
        : line[i] >= 32 && line[i] < 127
        ? String.fromCharCode(line[i])
        : ".";
    }
    out += `${offset.toString(16).padStart(10, "0")}: ${hex}|${ascii}|\n`;
  }
  return out;
}

Deno.test("lines as nbddump prints them: repeats squashed, the last line never", () => {
  // nbdkit data "1 2 3 @90 'hello world!'" size=100, as nbddump 1.14.2 printed it.
  const bytes = new Uint8Array(100);
  bytes.set([1, 2, 3]);
  bytes.set(new TextEncoder().encode("hello world!").subarray(0, 10), 90);
  assert.equal(
    dump(bytes, 100),
    "0000000000: 01 02 03 00 00 00 00 00  00 00 00 00 00 00 00 00 |................|\n" +
      "0000000010: 00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00 |................|\n" +
      "*\n" +
      "0000000050: 00 00 00 00 00 00 00 00  00 00 68 65 6c 6c 6f 20 |..........hello |\n" +
      "0000000060: 77 6f 72 6c                                      |worl            |\n",
  );
});

Deno.test("a dump cut short by --length may end in a squashed line", () => {
  const bytes = new Uint8Array(40);
  bytes.set([1, 2, 3]);
  assert.equal(
    dump(bytes, 3 * 1024 * 1024),
    "0000000000: 01 02 03 00 00 00 00 00  00 00 00 00 00 00 00 00 |................|\n" +
      "0000000010: 00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00 |................|\n" +
      "*\n",
  );
  assert.equal(decoder.decode(new Hexdump(10).end()), "", "nothing fed, nothing printed");
});

Deno.test("addresses grow past 10 digits; printable ASCII only in the right column", () => {
  const hexdump = new Hexdump(2 ** 40 + 16);
  assert.equal(
    decoder.decode(hexdump.zeroes(2 ** 40)),
    `0000000000: ${"00 ".repeat(8)} ${"00 ".repeat(8)}|${".".repeat(16)}|\n*\n`,
    "a terabyte of zeroes is one line and a star",
  );
  assert.equal(
    decoder.decode(hexdump.data(new Uint8Array([0x41, 0x7e, 0x7f, 0x80, 0xff, 0x20]))),
    "",
  );
  assert.equal(
    decoder.decode(hexdump.end()),
    `10000000000: 41 7e 7f 80 ff 20 ${" ".repeat(3 * 10 + 1)}|A~... ${" ".repeat(10)}|\n`,
  );
});

Deno.test("any split into data and zero pieces dumps like nbddump", () => {
  let seed = 42;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let round = 0; round < 200; round++) {
    const size = 1 + Math.floor(random() * 400);
    const length = random() < 0.3 ? Math.floor(random() * size) : size;
    const bytes = new Uint8Array(length);
    const pieces: number[] = [];
    for (let at = 0; at < length;) {
      const piece = Math.min(length - at, 1 + Math.floor(random() * 70));
      if (random() < 0.5) {
        for (let i = 0; i < piece; i++) bytes[at + i] = random() < 0.5 ? 0x61 : 0;
      }
      pieces.push(piece);
      at += piece;
    }
    assert.equal(dump(bytes, size, pieces), reference(bytes, size), `round ${round}`);
  }
});

/** nbddump's escapes, by what they colour. */
const GREEN = "\x1b[22;32m";
const GREY = "\x1b[22;90m";
const BLUE = "\x1b[1;34m";
const RED = "\x1b[1;31m";
const MAGENTA = "\x1b[1;35m";
const RESET = "\x1b[0m";

Deno.test("colour: an escape before each part, Unicode marks, a reset after each line", () => {
  // nbdkit data "0 0x41 0x2e 0xff" size=4 through nbddump --color, as 1.14.2 printed it.
  const hexdump = new Hexdump(4, { colour: true });
  const text = decoder.decode(hexdump.data(new Uint8Array([0, 0x41, 0x2e, 0xff]))) +
    decoder.decode(hexdump.end());
  assert.equal(
    text,
    `${GREEN}0000000000${GREY}: ${GREY}00 ${BLUE}41 ${BLUE}2e ${BLUE}ff ${GREY}` +
      `${" ".repeat(3 * 12 + 1)}\u2502${GREY}\u00b7${RED}A${MAGENTA}.${GREY}\u00b7${GREY}` +
      `${" ".repeat(12)}\u2502\n${RESET}`,
  );
});

Deno.test("colour: squashed zero lines are one star, from any start", () => {
  const zeroLine = (address: string) =>
    `${GREEN}${address}${GREY}: ${`${GREY}00 `.repeat(8)} ${`${GREY}00 `.repeat(8)}${GREY}` +
    `\u2502${`${GREY}\u00b7`.repeat(16)}${GREY}\u2502\n${RESET}`;
  const hexdump = new Hexdump(80, { start: 16, colour: true });
  assert.equal(
    decoder.decode(hexdump.zeroes(64)) + decoder.decode(hexdump.end()),
    zeroLine("0000000010") + "\u2606\n" + zeroLine("0000000040"),
  );
});
