/**
 * Splits a QMP input byte stream into JSON values the way QEMU's JSON
 * streamer does, with its grammar, limits and error messages.
 *
 * Bytes are cut into tokens as they arrive (QEMU's lexer also accepts
 * single-quoted strings, `\'` escapes and modified UTF-8, where `\xC0\x80`
 * is U+0000). Tokens are collected until the braces and brackets opened
 * since the last value are closed (or one closes more than was opened), and
 * the collected tokens are then parsed as one value. So several values may
 * share a line, a value may span reads, and nothing needs a line end.
 *
 * A byte the grammar does not allow yields "JSON parse error, stray '...'"
 * at once; what was collected is dropped and bytes are skipped until a
 * structural character, an ASCII control character other than tab, or
 * 0xFE/0xFF, where lexing starts afresh (clients send such a byte to reset a
 * confused stream). Memory is bounded: a value whose tokens exceed
 * {@linkcode JsonStreamLimits}.maxValueBytes, has too many tokens or nests
 * too deep is dropped with QEMU's "JSON token size limit exceeded" (and
 * friends) and the stream goes on with the bytes that follow.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { JsonStreamParser } from "./json-stream.ts";
 * const parser = new JsonStreamParser();
 * assert.deepEqual(parser.feed(new TextEncoder().encode('{"execute": "quit"} {"ex')), [
 *   { value: { execute: "quit" } },
 * ]);
 * assert.deepEqual(parser.feed(new TextEncoder().encode('ecute": 1}]')), [
 *   { value: { execute: 1n } },
 *   { error: "JSON parse error, expecting value" },
 * ]);
 * ```
 * @module
 */

import { type JsonObject, type JsonValue, setMember } from "./json-value.ts";

/** Bounds on one value. */
export interface JsonStreamLimits {
  /** Bytes of all tokens of one value (whitespace not counted), and of any one token. */
  readonly maxValueBytes: number;
  /** Tokens of one value. */
  readonly maxTokens: number;
  /** Open braces plus brackets. */
  readonly maxNesting: number;
}

/** QEMU's own limits (64 MiB of tokens, 2 Mi tokens, nesting 1024). */
export const QEMU_JSON_LIMITS: JsonStreamLimits = {
  maxValueBytes: 64 << 20,
  maxTokens: 2 << 20,
  maxNesting: 1024,
};

/** denbd's limits: QEMU's, but at most 1 MiB per value, so a monitor's memory stays small. */
export const DEFAULT_JSON_LIMITS: JsonStreamLimits = {
  ...QEMU_JSON_LIMITS,
  maxValueBytes: 1 << 20,
};

/** What the stream yields: a value, or the error message QEMU replies with. */
export type JsonStreamItem = { readonly value: JsonValue } | { readonly error: string };

/** Lexer states. */
const enum State {
  Start,
  DoubleQuoted,
  DoubleQuotedEscape,
  SingleQuoted,
  SingleQuotedEscape,
  Zero,
  Sign,
  Digits,
  Point,
  Fraction,
  ExponentMark,
  ExponentSign,
  Exponent,
  Keyword,
  Recovery,
}

/** Token types. */
const enum Token {
  OpenBrace,
  CloseBrace,
  OpenBracket,
  CloseBracket,
  Colon,
  Comma,
  String,
  Integer,
  Float,
  Keyword,
}

const STRUCTURAL: Readonly<Record<number, Token>> = {
  0x7b: Token.OpenBrace,
  0x7d: Token.CloseBrace,
  0x5b: Token.OpenBracket,
  0x5d: Token.CloseBracket,
  0x3a: Token.Colon,
  0x2c: Token.Comma,
};

const QUOTE = 0x22;
const APOSTROPHE = 0x27;
const BACKSLASH = 0x5c;

const isDigit = (byte: number) => byte >= 0x30 && byte <= 0x39;
const isLowercase = (byte: number) => byte >= 0x61 && byte <= 0x7a;
const isExponentMark = (byte: number) => byte === 0x65 || byte === 0x45;
/** Bytes allowed inside a string (and after a backslash). */
const isStringByte = (byte: number) => byte >= 0x20 && byte <= 0xfd;

/**
 * Thrown inside the parser; becomes "JSON parse error, MESSAGE". Not an
 * Error: garbage input throws one per byte, and a stack trace each is costly.
 */
class ParseError {
  constructor(readonly message: string) {}
}

/** Cuts bytes into JSON values; one instance per input stream. */
export class JsonStreamParser {
  readonly #limits: JsonStreamLimits;
  #state = State.Start;
  /** Bytes of the collected tokens, then of the token being lexed. */
  #bytes = new Uint8Array(256);
  #length = 0;
  /** Where the token being lexed starts (= bytes of the collected tokens). */
  #tokenStart = 0;
  #types = new Uint8Array(64);
  #ends = new Uint32Array(64);
  #tokens = 0;
  #braces = 0;
  #brackets = 0;
  #out: JsonStreamItem[] = [];

  /** A parser with `limits` (default {@linkcode DEFAULT_JSON_LIMITS}). */
  constructor(limits: Partial<JsonStreamLimits> = {}) {
    this.#limits = { ...DEFAULT_JSON_LIMITS, ...limits };
  }

  /** Feed the next bytes; returns the values (and errors) they completed, in order. */
  feed(chunk: Uint8Array): JsonStreamItem[] {
    for (const byte of chunk) {
      this.#lex(byte);
      if (this.#length - this.#tokenStart > this.#limits.maxValueBytes) {
        this.#fail("JSON token size limit exceeded");
        this.#state = State.Start;
      }
    }
    const out = this.#out;
    this.#out = [];
    return out;
  }

  /** Advance the lexer by one byte. */
  #lex(byte: number): void {
    for (;;) {
      switch (this.#state) {
        case State.Start: {
          if (byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d) return;
          const structural = STRUCTURAL[byte];
          if (structural !== undefined) return this.#emit(structural, byte);
          const next = byte === QUOTE
            ? State.DoubleQuoted
            : byte === APOSTROPHE
            ? State.SingleQuoted
            : byte === 0x30
            ? State.Zero
            : isDigit(byte)
            ? State.Digits
            : byte === 0x2d
            ? State.Sign
            : isLowercase(byte)
            ? State.Keyword
            : null;
          return next === null ? this.#stray(byte) : this.#consume(byte, next);
        }
        case State.DoubleQuoted:
        case State.SingleQuoted: {
          const quote = this.#state === State.DoubleQuoted ? QUOTE : APOSTROPHE;
          if (byte === quote) return this.#emit(Token.String, byte);
          if (byte === BACKSLASH) return this.#consume(byte, this.#state + 1);
          return isStringByte(byte) ? this.#consume(byte, this.#state) : this.#stray(byte);
        }
        case State.DoubleQuotedEscape:
        case State.SingleQuotedEscape:
          return isStringByte(byte) ? this.#consume(byte, this.#state - 1) : this.#stray(byte);
        case State.Sign:
          if (byte === 0x30) return this.#consume(byte, State.Zero);
          return isDigit(byte) ? this.#consume(byte, State.Digits) : this.#stray(byte);
        case State.Zero:
          if (isDigit(byte)) return this.#stray(byte);
          if (byte === 0x2e) return this.#consume(byte, State.Point);
          this.#finish(Token.Integer);
          continue;
        case State.Digits:
          if (isDigit(byte)) return this.#consume(byte, State.Digits);
          if (byte === 0x2e) return this.#consume(byte, State.Point);
          if (isExponentMark(byte)) return this.#consume(byte, State.ExponentMark);
          this.#finish(Token.Integer);
          continue;
        case State.Point:
          return isDigit(byte) ? this.#consume(byte, State.Fraction) : this.#stray(byte);
        case State.Fraction:
          if (isDigit(byte)) return this.#consume(byte, State.Fraction);
          if (isExponentMark(byte)) return this.#consume(byte, State.ExponentMark);
          this.#finish(Token.Float);
          continue;
        case State.ExponentMark:
          if (byte === 0x2b || byte === 0x2d) return this.#consume(byte, State.ExponentSign);
          return isDigit(byte) ? this.#consume(byte, State.Exponent) : this.#stray(byte);
        case State.ExponentSign:
          return isDigit(byte) ? this.#consume(byte, State.Exponent) : this.#stray(byte);
        case State.Exponent:
          if (isDigit(byte)) return this.#consume(byte, State.Exponent);
          this.#finish(Token.Float);
          continue;
        case State.Keyword:
          if (isLowercase(byte)) return this.#consume(byte, State.Keyword);
          this.#finish(Token.Keyword);
          continue;
        case State.Recovery: {
          const resumes = (byte < 0x20 && byte !== 0x09) || byte >= 0xfe ||
            STRUCTURAL[byte] !== undefined;
          if (!resumes) return;
          this.#state = State.Start;
          continue;
        }
      }
    }
  }

  /** Append `byte` to the token being lexed and move to `state`. */
  #consume(byte: number, state: State): void {
    if (this.#length === this.#bytes.length) this.#bytes = grow(this.#bytes, this.#length + 1);
    this.#bytes[this.#length++] = byte;
    this.#state = state;
  }

  /** Append `byte` and complete a token of `type` with it. */
  #emit(type: Token, byte: number): void {
    this.#consume(byte, State.Start);
    this.#finish(type);
  }

  /** `byte` is not allowed here: report the token so far with it, then skip to a resync point. */
  #stray(byte: number): void {
    this.#consume(byte, State.Recovery);
    const text = decodeLeniently(this.#bytes.subarray(this.#tokenStart, this.#length));
    this.#fail(`JSON parse error, stray '${text}'`);
    this.#state = State.Recovery;
  }

  /** The token being lexed is complete: collect it, and parse once a value is complete. */
  #finish(type: Token): void {
    this.#state = State.Start;
    if (type === Token.OpenBrace) this.#braces++;
    else if (type === Token.CloseBrace) this.#braces--;
    else if (type === Token.OpenBracket) this.#brackets++;
    else if (type === Token.CloseBracket) this.#brackets--;
    const length = this.#length - this.#tokenStart;
    if (this.#tokenStart + length + 1 > this.#limits.maxValueBytes) {
      return this.#fail("JSON token size limit exceeded");
    }
    if (this.#tokens + 1 > this.#limits.maxTokens) {
      return this.#fail("JSON token count limit exceeded");
    }
    if (this.#braces + this.#brackets > this.#limits.maxNesting) {
      return this.#fail("JSON nesting depth limit exceeded");
    }
    if (this.#tokens === this.#types.length) {
      this.#types = grow(this.#types, this.#tokens + 1);
      this.#ends = grow(this.#ends, this.#tokens + 1);
    }
    this.#types[this.#tokens] = type;
    this.#ends[this.#tokens++] = this.#length;
    this.#tokenStart = this.#length;
    const open = this.#braces > 0 || this.#brackets > 0;
    if (open && this.#braces >= 0 && this.#brackets >= 0) return;
    try {
      const parser = new TokenParser(this.#bytes, this.#types, this.#ends, this.#tokens);
      this.#out.push({ value: parser.parse() });
    } catch (error) {
      if (!(error instanceof ParseError)) throw error;
      this.#out.push({ error: `JSON parse error, ${error.message}` });
    }
    this.#reset();
  }

  /** Report `message` and drop everything collected. */
  #fail(message: string): void {
    this.#out.push({ error: message });
    this.#reset();
  }

  #reset(): void {
    this.#length =
      this.#tokenStart =
      this.#tokens =
      this.#braces =
      this.#brackets =
        0;
    if (this.#bytes.length > 64 * 1024) this.#bytes = new Uint8Array(256);
    if (this.#types.length > 4096) {
      this.#types = new Uint8Array(64);
      this.#ends = new Uint32Array(64);
    }
  }
}

/** A copy of `array` with room for at least `needed` elements. */
function grow<T extends Uint8Array | Uint32Array>(array: T, needed: number): T {
  const bigger = new (array.constructor as new (length: number) => T)(
    Math.max(needed, array.length * 2),
  );
  bigger.set(array);
  return bigger;
}

/** Parses the tokens of one value, as QEMU's JSON parser does. */
class TokenParser {
  readonly #bytes: Uint8Array;
  readonly #types: Uint8Array;
  readonly #ends: Uint32Array;
  readonly #count: number;
  #next = 0;

  /** Parse the first `count` tokens described by `types` and `ends` (offsets into `bytes`). */
  constructor(bytes: Uint8Array, types: Uint8Array, ends: Uint32Array, count: number) {
    this.#bytes = bytes;
    this.#types = types;
    this.#ends = ends;
    this.#count = count;
  }

  /** The value the tokens form; throws ParseError with QEMU's message if they form none. */
  parse(): JsonValue {
    return this.#value();
  }

  #peek(): Token {
    if (this.#next === this.#count) throw new ParseError("premature EOI");
    return this.#types[this.#next];
  }

  /** Start and end of token `index`. */
  #span(index: number): [number, number] {
    return [index === 0 ? 0 : this.#ends[index - 1], this.#ends[index]];
  }

  #value(): JsonValue {
    switch (this.#peek()) {
      case Token.OpenBrace:
        return this.#object();
      case Token.OpenBracket:
        return this.#array();
      case Token.String:
        return this.#string();
      case Token.Integer:
        return parseInteger(this.#text(this.#next++));
      case Token.Float:
        return Number(this.#text(this.#next++));
      case Token.Keyword: {
        const word = this.#text(this.#next++);
        if (word === "true") return true;
        if (word === "false") return false;
        if (word === "null") return null;
        throw new ParseError(`invalid keyword '${word}'`);
      }
      default:
        throw new ParseError("expecting value");
    }
  }

  #object(): JsonObject {
    this.#next++;
    const object: JsonObject = {};
    if (this.#peek() === Token.CloseBrace) {
      this.#next++;
      return object;
    }
    for (;;) {
      this.#member(object);
      const separator = this.#peek();
      this.#next++;
      if (separator === Token.CloseBrace) return object;
      if (separator !== Token.Comma) throw new ParseError("expected separator in dict");
    }
  }

  #member(object: JsonObject): void {
    this.#peek();
    const key = this.#value();
    if (typeof key !== "string") throw new ParseError("key is not a string in object");
    const colon = this.#peek();
    this.#next++;
    if (colon !== Token.Colon) throw new ParseError("missing : in object pair");
    const value = this.#value();
    if (Object.hasOwn(object, key)) throw new ParseError("duplicate key");
    setMember(object, key, value);
  }

  #array(): JsonValue[] {
    this.#next++;
    const array: JsonValue[] = [];
    if (this.#peek() === Token.CloseBracket) {
      this.#next++;
      return array;
    }
    for (;;) {
      array.push(this.#value());
      const separator = this.#peek();
      this.#next++;
      if (separator === Token.CloseBracket) return array;
      if (separator !== Token.Comma) throw new ParseError("expected separator in list");
    }
  }

  /** The ASCII text of token `index` (numbers and keywords). */
  #text(index: number): string {
    const [start, end] = this.#span(index);
    return String.fromCharCode(...this.#bytes.subarray(start, end));
  }

  /** Decode a string token: escapes, surrogate pairs, modified UTF-8. */
  #string(): string {
    const [start, tokenEnd] = this.#span(this.#next++);
    const bytes = this.#bytes;
    const close = tokenEnd - 1;
    const byteAt = (index: number) => index < tokenEnd ? bytes[index] : 0;
    let text = "";
    for (let i = start + 1; i < close;) {
      if (bytes[i] !== BACKSLASH) {
        const [codePoint, next] = decodeCodePoint(bytes, i, Math.min(6, tokenEnd - i));
        if (codePoint < 0) throw new ParseError("invalid UTF-8 sequence in string");
        text += String.fromCodePoint(codePoint);
        i = next;
        continue;
      }
      const escape = String.fromCharCode(bytes[i + 1]);
      const begin = i;
      i += 2;
      const simple = SIMPLE_ESCAPES[escape];
      if (simple !== undefined) {
        text += simple;
        continue;
      }
      if (escape !== "u") throw new ParseError("invalid escape sequence in string");
      let codePoint = hex4(byteAt, i);
      i += 4;
      if (
        codePoint >= 0xd800 && codePoint <= 0xdbff && byteAt(i) === BACKSLASH &&
        byteAt(i + 1) === 0x75
      ) {
        const trailing = hex4(byteAt, i + 2);
        if (trailing >= 0xdc00 && trailing <= 0xdfff) {
          codePoint = 0x10000 + ((codePoint & 0x3ff) << 10) + (trailing & 0x3ff);
          i += 6;
        } else {
          codePoint = -1;
        }
      }
      if (!isEncodable(codePoint)) {
        const shown = decodeLeniently(bytes.subarray(begin, Math.min(i, tokenEnd)));
        throw new ParseError(`${shown} is not a valid Unicode character`);
      }
      text += String.fromCodePoint(codePoint);
    }
    return text;
  }
}

/**
 * What a backslash followed by these characters stands for in QEMU's JSON
 * (`\'` too, for its single-quoted strings); `\u` is not among them.
 */
export const SIMPLE_ESCAPES: Readonly<Record<string, string>> = {
  '"': '"',
  "'": "'",
  "\\": "\\",
  "/": "/",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
};

/** The value of four hex digits at `index`, or -1 if any is not a hex digit. */
function hex4(byteAt: (index: number) => number, index: number): number {
  let value = 0;
  for (let i = index; i < index + 4; i++) {
    const digit = parseInt(String.fromCharCode(byteAt(i)), 16);
    if (Number.isNaN(digit)) return -1;
    value = value * 16 + digit;
  }
  return value;
}

/** Whether QEMU can store `codePoint` in a string (no surrogates, no noncharacters). */
function isEncodable(codePoint: number): boolean {
  return codePoint >= 0 && codePoint <= 0x10ffff && !(codePoint >= 0xd800 && codePoint <= 0xdfff) &&
    !(codePoint >= 0xfdd0 && codePoint <= 0xfdef) && (codePoint & 0xfffe) !== 0xfffe;
}

const MIN_CODE_POINT = [0x80, 0x800, 0x10000, 0x200000, 0x4000000];

/**
 * Decode one modified-UTF-8 sequence at `index`, looking at no more than
 * `limit` bytes. Returns the code point (-1 if invalid: a stray continuation
 * byte, 0xFE/0xFF, a truncated sequence, an overlong form other than
 * `\xC0\x80`, a surrogate, a noncharacter, beyond U+10FFFF) and where the
 * next sequence starts.
 */
function decodeCodePoint(bytes: Uint8Array, index: number, limit: number): [number, number] {
  const lead = bytes[index];
  if (lead < 0x80) return [lead, index + 1];
  if (lead >= 0xfe || (lead & 0x40) === 0) return [-1, index + 1];
  let length = 0;
  let mask = 0x80;
  for (; lead & mask; mask >>= 1) length++;
  let codePoint = lead & (mask - 1);
  for (let i = 1; i < length; i++) {
    const byte = i < limit ? bytes[index + i] : 0;
    if ((byte & 0xc0) !== 0x80) return [-1, index + i];
    codePoint = codePoint * 64 + (byte & 0x3f);
  }
  const next = index + length;
  const overlong = codePoint < MIN_CODE_POINT[length - 2] && !(codePoint === 0 && length === 2);
  if (overlong || codePoint > 0x10ffff) return [-1, next];
  return [isEncodable(codePoint) ? codePoint : -1, next];
}

/**
 * Text of raw input bytes for an error message, as QEMU shows it: up to the
 * first NUL byte, each invalid sequence replaced by U+FFFD.
 */
function decodeLeniently(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length && bytes[i] !== 0;) {
    const [codePoint, next] = decodeCodePoint(bytes, i, bytes.length - i);
    text += codePoint < 0 ? "\ufffd" : String.fromCodePoint(codePoint);
    i = next;
  }
  return text;
}

const INT64_MIN = -(1n << 63n);
const UINT64_MAX = (1n << 64n) - 1n;

/** An integer token: a bigint if it fits 64 bits (signed or unsigned), else a double. */
function parseInteger(text: string): JsonValue {
  const value = BigInt(text);
  return value >= INT64_MIN && value <= UINT64_MAX ? value : Number(text);
}
