/**
 * The hex dump nbddump prints: 16 bytes a line as a 10-digit hex address,
 * two groups of eight hex bytes and the printable ASCII between bars. A line
 * equal to the last one printed becomes a single "*" (never the first line
 * of the export, nor its last). Bytes are fed in order, in pieces of any
 * size; runs of zeroes can be fed without materialising them, so a sparse
 * export of any size is dumped in time proportional to its data. The text
 * is produced as ASCII bytes, ready to be written.
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
/** Longest line: an address of up to 14 hex digits (2^53), ": ", hex, ASCII column, bars, newline. */
const MAX_LINE_BYTES = 14 + 2 + 3 * LINE + 1 + LINE + 3;
const HEX_DIGITS = new TextEncoder().encode("0123456789abcdef");
const SPACE = 0x20;
const BAR = 0x7c;
const DOT = 0x2e;
const NEWLINE = 0x0a;
const SQUASHED = new TextEncoder().encode("*\n");
const ZERO_LINE = new Uint8Array(LINE);

/** A hex dump in progress; each method returns the text of the lines it completed. */
export class Hexdump {
  readonly #size: number;
  /** Address of the next line. */
  #offset = 0;
  /** Bytes of the next line received so far. */
  readonly #pending = new Uint8Array(LINE);
  #pendingLength = 0;
  /** The last line printed. */
  readonly #last = new Uint8Array(LINE);
  #squashing = false;
  /** Text produced by the current call. */
  #out = new Uint8Array(64 * MAX_LINE_BYTES);
  #used = 0;

  /**
   * Start a dump of an export of `size` bytes (its last line is never
   * squashed), its first line at address `start`.
   */
  constructor(size: number, start = 0) {
    this.#size = size;
    this.#offset = start;
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
    this.#reserve(Math.ceil((bytes.length - at) / LINE) * MAX_LINE_BYTES);
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
        if (!this.#squashing) this.#append(SQUASHED);
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
    if (offset > 0 && offset + LINE < this.#size && equal(bytes, this.#last)) {
      if (!this.#squashing) this.#append(SQUASHED);
      this.#squashing = true;
      return;
    }
    this.#squashing = false;
    this.#last.set(bytes);
    this.#reserve(MAX_LINE_BYTES);
    const out = this.#out;
    let at = this.#used;
    let digits = ADDRESS_DIGITS;
    while (offset >= 16 ** digits) digits++;
    for (let i = digits - 1, rest = offset; i >= 0; i--, rest = Math.floor(rest / 16)) {
      out[at + i] = HEX_DIGITS[rest % 16];
    }
    at += digits;
    out[at++] = 0x3a; // ":"
    out[at++] = SPACE;
    for (let i = 0; i < LINE; i++) {
      if (i < valid) {
        out[at++] = HEX_DIGITS[bytes[i] >> 4];
        out[at++] = HEX_DIGITS[bytes[i] & 15];
      } else {
        out[at++] = SPACE;
        out[at++] = SPACE;
      }
      out[at++] = SPACE;
      if (i === 7) out[at++] = SPACE;
    }
    out[at++] = BAR;
    for (let i = 0; i < LINE; i++) {
      const byte = bytes[i];
      out[at++] = i >= valid ? SPACE : byte >= 0x20 && byte < 0x7f ? byte : DOT;
    }
    out[at++] = BAR;
    out[at++] = NEWLINE;
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

function equal(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < LINE; i++) if (a[i] !== b[i]) return false;
  return true;
}
