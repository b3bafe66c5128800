/**
 * The hex dump nbddump prints: 16 bytes a line as a 10-digit hex address,
 * two groups of eight hex bytes and the printable ASCII between bars. A line
 * equal to the last one printed becomes a single "*" (never the first line
 * of the dump, nor the export's last). Bytes are fed in order, in pieces of any
 * size; runs of zeroes can be fed without materialising them, so a sparse
 * export of any size is dumped in time proportional to its data. The text
 * is produced as bytes, ready to be written.
 *
 * In colour (nbddump --color) every part of a line is preceded by its ANSI
 * escape, as nbddump writes them: the address green, punctuation, zero bytes
 * and unprintable characters grey, other bytes bright blue, letters and
 * digits bright red, other printable characters bright magenta; each line
 * ends with a reset after its newline. The marks are then Unicode: "│" for
 * the bars, "·" for unprintable characters and "☆" for squashed lines.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hexdump } from "./hexdump.ts";
 * const dump = new Hexdump(4);
 * const parts = [dump.data(new TextEncoder().encode("hi")), dump.zeroes(2), dump.end()];
 * assert.equal(
 *   parts.map((part) => new TextDecoder().decode(part)).join(""),
 *   "0000000000: 68 69 00 00                                      |hi..            |\n",
 * );
 * ```
 * @module
 */

/** Bytes shown per line. */
const LINE = 16;
/** Digits of the address column (more only when the address needs them). */
const ADDRESS_DIGITS = 10;
const encoder = new TextEncoder();
const HEX_DIGITS = encoder.encode("0123456789abcdef");
const SPACE = 0x20;
const DOT = 0x2e;
const NEWLINE = 0x0a;
const ZERO_LINE = new Uint8Array(LINE);

/** The marks of a dump: nbddump's plain ASCII ones, or the Unicode ones it uses in colour. */
interface Marks {
  /** Around the ASCII column. */
  readonly bar: Uint8Array;
  /** An unprintable character in the ASCII column. */
  readonly dot: Uint8Array;
  /** The line standing for squashed lines, newline included. */
  readonly squashed: Uint8Array;
}

const PLAIN_MARKS: Marks = {
  bar: encoder.encode("|"),
  dot: Uint8Array.of(DOT),
  squashed: encoder.encode("*\n"),
};

const COLOUR_MARKS: Marks = {
  bar: encoder.encode("\u2502"),
  dot: encoder.encode("\u00b7"),
  squashed: encoder.encode("\u2606\n"),
};

/** An ANSI "select graphic rendition" escape. */
function sgr(parameters: string): Uint8Array {
  return encoder.encode(`\x1b[${parameters}m`);
}

/** The colour of each part of a line, as nbddump chooses them. */
const COLOURS = {
  /** The address. */
  address: sgr("22;32"),
  /** Punctuation, padding, zero bytes and unprintable characters: grey. */
  plain: sgr("22;90"),
  /** A byte that is not zero, in hex: bright blue. */
  nonZero: sgr("1;34"),
  /** A letter or digit: bright red. */
  alphanumeric: sgr("1;31"),
  /** Another printable character: bright magenta. */
  printable: sgr("1;35"),
  /** Back to the terminal's own colours, after each line. */
  reset: sgr("0"),
} as const;

/** Longest escape of {@linkcode COLOURS}. */
const MAX_ESCAPE = Math.max(...Object.values(COLOURS).map((escape) => escape.length));
/** Longest plain line: an address of up to 14 hex digits (2^53), ": ", hex, ASCII column, bars, newline. */
const MAX_LINE_BYTES = 14 + 2 + 3 * LINE + 1 + LINE + 3;
/** Longest coloured line: an escape before every part, marks of up to 3 bytes. */
const MAX_COLOUR_LINE_BYTES = MAX_LINE_BYTES + 2 * LINE * 3 + (2 * LINE + 6) * MAX_ESCAPE;

/** Whether `byte` is printable ASCII (isprint in the C locale). */
function isPrintable(byte: number): boolean {
  return byte >= 0x20 && byte < 0x7f;
}

/** Whether `byte` is an ASCII letter or digit (isalnum in the C locale). */
function isAlphanumeric(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || ((byte | 0x20) >= 0x61 && (byte | 0x20) <= 0x7a);
}

/** How to dump. */
export interface HexdumpOptions {
  /** Address of the first line (default 0). */
  readonly start?: number;
  /** nbddump's colours and Unicode marks (default false: plain ASCII). */
  readonly colour?: boolean;
}

/** A hex dump in progress; each method returns the text of the lines it completed. */
export class Hexdump {
  readonly #size: number;
  readonly #colour: boolean;
  readonly #marks: Marks;
  /** Room one line may take. */
  readonly #lineBytes: number;
  /** Address of the next line. */
  #offset = 0;
  /** Bytes of the next line received so far. */
  readonly #pending = new Uint8Array(LINE);
  #pendingLength = 0;
  /** The last line printed, once a line was. */
  readonly #last = new Uint8Array(LINE);
  #printedAny = false;
  #squashing = false;
  /** Text produced by the current call. */
  #out: Uint8Array;
  #used = 0;

  /**
   * Start a dump of an export of `size` bytes (its last line is never
   * squashed), its first line at address `options.start`.
   */
  constructor(size: number, options: HexdumpOptions = {}) {
    this.#size = size;
    this.#offset = options.start ?? 0;
    this.#colour = options.colour ?? false;
    this.#marks = this.#colour ? COLOUR_MARKS : PLAIN_MARKS;
    this.#lineBytes = this.#colour ? MAX_COLOUR_LINE_BYTES : MAX_LINE_BYTES;
    this.#out = new Uint8Array(64 * this.#lineBytes);
  }

  /** Feed the next `bytes`. */
  data(bytes: Uint8Array): Uint8Array {
    let at = 0;
    if (this.#pendingLength) {
      at = Math.min(LINE - this.#pendingLength, bytes.length);
      this.#pending.set(bytes.subarray(0, at), this.#pendingLength);
      this.#pendingLength += at;
      if (this.#pendingLength < LINE) return this.#take();
      this.#line(this.#pending, LINE);
      this.#pendingLength = 0;
    }
    this.#reserve(Math.ceil((bytes.length - at) / LINE) * this.#lineBytes);
    for (; at + LINE <= bytes.length; at += LINE) this.#line(bytes.subarray(at, at + LINE), LINE);
    this.#pending.set(bytes.subarray(at));
    this.#pendingLength = bytes.length - at;
    return this.#take();
  }

  /** Feed `count` zero bytes. */
  zeroes(count: number): Uint8Array {
    let rest = count;
    if (this.#pendingLength) {
      const fill = Math.min(LINE - this.#pendingLength, rest);
      this.#pending.fill(0, this.#pendingLength, this.#pendingLength + fill);
      this.#pendingLength += fill;
      rest -= fill;
      if (this.#pendingLength < LINE) return this.#take();
      this.#line(this.#pending, LINE);
      this.#pendingLength = 0;
    }
    let lines = Math.floor(rest / LINE);
    if (lines) {
      // After one zero line, every further one equals the last line printed:
      // all are squashed except the export's final line.
      this.#line(ZERO_LINE, LINE);
      lines--;
      const finalLine = lines > 0 && this.#offset + lines * LINE >= this.#size;
      const squashed = lines - (finalLine ? 1 : 0);
      if (squashed) {
        if (!this.#squashing) this.#append(this.#marks.squashed);
        this.#squashing = true;
        this.#offset += squashed * LINE;
      }
      if (finalLine) this.#line(ZERO_LINE, LINE);
    }
    this.#pending.fill(0, 0, rest % LINE);
    this.#pendingLength = rest % LINE;
    return this.#take();
  }

  /** Finish the dump: the last partial line, if any. */
  end(): Uint8Array {
    if (this.#pendingLength) {
      const valid = this.#pendingLength;
      this.#pending.fill(0, valid);
      this.#pendingLength = 0;
      this.#line(this.#pending, valid);
    }
    return this.#take();
  }

  /** Emit the line at the current address, whose first `valid` bytes are shown. */
  #line(bytes: Uint8Array, valid: number): void {
    const offset = this.#offset;
    this.#offset += LINE;
    if (this.#printedAny && offset + LINE < this.#size && equal(bytes, this.#last)) {
      if (!this.#squashing) this.#append(this.#marks.squashed);
      this.#squashing = true;
      return;
    }
    this.#squashing = false;
    this.#printedAny = true;
    this.#last.set(bytes);
    this.#reserve(this.#lineBytes);
    const out = this.#out;
    const colour = this.#colour;
    const { bar, dot } = this.#marks;
    let at = this.#used;
    if (colour) at = put(out, at, COLOURS.address);
    let digits = ADDRESS_DIGITS;
    while (offset >= 16 ** digits) digits++;
    for (let i = digits - 1, rest = offset; i >= 0; i--, rest = Math.floor(rest / 16)) {
      out[at + i] = HEX_DIGITS[rest % 16];
    }
    at += digits;
    if (colour) at = put(out, at, COLOURS.plain);
    out[at++] = 0x3a; // ":"
    out[at++] = SPACE;
    for (let i = 0; i < valid; i++) {
      if (colour) at = put(out, at, bytes[i] ? COLOURS.nonZero : COLOURS.plain);
      out[at++] = HEX_DIGITS[bytes[i] >> 4];
      out[at++] = HEX_DIGITS[bytes[i] & 15];
      out[at++] = SPACE;
      if (i === 7) out[at++] = SPACE;
    }
    if (colour) at = put(out, at, COLOURS.plain);
    for (let i = valid; i < LINE; i++) {
      out[at++] = SPACE;
      out[at++] = SPACE;
      out[at++] = SPACE;
      if (i === 7) out[at++] = SPACE;
    }
    at = put(out, at, bar);
    for (let i = 0; i < valid; i++) {
      const byte = bytes[i];
      if (!colour) out[at++] = isPrintable(byte) ? byte : DOT;
      else if (isPrintable(byte)) {
        at = put(out, at, isAlphanumeric(byte) ? COLOURS.alphanumeric : COLOURS.printable);
        out[at++] = byte;
      } else {
        at = put(out, at, COLOURS.plain);
        at = put(out, at, dot);
      }
    }
    if (colour) at = put(out, at, COLOURS.plain);
    for (let i = valid; i < LINE; i++) out[at++] = SPACE;
    at = put(out, at, bar);
    out[at++] = NEWLINE;
    if (colour) at = put(out, at, COLOURS.reset);
    this.#used = at;
  }

  #append(text: Uint8Array): void {
    this.#reserve(text.length);
    this.#out.set(text, this.#used);
    this.#used += text.length;
  }

  /** Make room for `bytes` more bytes of text. */
  #reserve(bytes: number): void {
    if (this.#used + bytes <= this.#out.length) return;
    const grown = new Uint8Array(Math.max(this.#out.length * 2, this.#used + bytes));
    grown.set(this.#out.subarray(0, this.#used));
    this.#out = grown;
  }

  /** The text produced since the last call. */
  #take(): Uint8Array {
    const text = this.#out.slice(0, this.#used);
    this.#used = 0;
    return text;
  }
}

/** Copy `bytes` into `out` at `at`; returns the index after them. */
function put(out: Uint8Array, at: number, bytes: Uint8Array): number {
  out.set(bytes, at);
  return at + bytes.length;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < LINE; i++) if (a[i] !== b[i]) return false;
  return true;
}
