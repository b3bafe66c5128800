/**
 * A minimal line editor for interactive shells on a terminal: a prompt,
 * cursor movement (arrows, Home/End, Ctrl-A/E), deletion (Backspace,
 * Delete, Ctrl-K/U), history on the up and down arrows (seeded with earlier
 * sessions' lines if given), Tab completion as readline does it, and output
 * printed above the line being edited. Ctrl-D on an empty line (or the end
 * of input) ends input; Ctrl-C clears the line, or ends input on an empty
 * one. The terminal is in raw mode only while a line is being read.
 *
 * Tab asks the completer for the words that may replace the word before
 * the cursor and inserts what they have in common (with a space after the
 * only one, unless it ends in `=` or `.`, where more follows); when that
 * adds nothing and several words fit, the bell rings, and a second Tab
 * lists them in columns above the line.
 *
 * @example
 * ```ts ignore
 * import { LineEditor } from "./line-editor.ts";
 * const editor = new LineEditor("> ");
 * for (let line; (line = await editor.readLine()) !== null;) editor.print(`you said ${line}`);
 * ```
 * @module
 */

import { formatColumns, terminalColumns } from "./columns.ts";

const encoder = new TextEncoder();

/** What a key does to the line being edited. */
type Action = "submit" | "eof" | "interrupt" | null;

/** The terminal a {@linkcode LineEditor} reads keys from and draws on. */
export interface Terminal {
  /** Read key bytes into `buffer`; null at the end of input. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Switch raw mode (keys unbuffered, no echo) on or off. */
  setRaw(raw: boolean): void;
  /** Write some of `data`, returning how much. */
  writeSync(data: Uint8Array): number;
  /** Columns per line, for listing completions (80 where the terminal does not say). */
  columns(): number;
}

/** The process's terminal: standard input and output. */
const STANDARD_TERMINAL: Terminal = {
  read: (buffer) => Deno.stdin.read(buffer),
  setRaw: (raw) => Deno.stdin.setRaw(raw),
  writeSync: (data) => Deno.stdout.writeSync(data),
  columns: terminalColumns,
};

/** What a {@linkcode LineEditor} works with besides its prompt. */
export interface LineEditorOptions {
  /**
   * Tab completion: for the text before the cursor, where the word being
   * completed starts and the words that may replace it.
   */
  readonly complete?: (
    beforeCursor: string,
  ) => { readonly start: number; readonly candidates: readonly string[] };
  /** Earlier lines for the up arrow, oldest first. */
  readonly history?: readonly string[];
  /** Where keys come from and the line is drawn: standard input and output by default. */
  readonly terminal?: Terminal;
}

/** Reads lines from the terminal with editing, history and completion. */
export class LineEditor {
  /** Shown before the line; may change between lines (a shell's mode). */
  prompt: string;
  readonly #history: string[];
  readonly #complete: LineEditorOptions["complete"];
  readonly #terminal: Terminal;
  readonly #decoder = new TextDecoder();
  #line = "";
  #cursor = 0;
  /** Index into history while browsing it (history.length: the draft). */
  #browsing = 0;
  #draft = "";
  #reading = false;
  #pending = "";
  /** The key before the one being applied (a second Tab lists completions). */
  #lastKey = "";

  /** An editor that shows `prompt` before each line. */
  constructor(prompt: string, options: LineEditorOptions = {}) {
    this.prompt = prompt;
    this.#history = [...options.history ?? []];
    this.#complete = options.complete;
    this.#terminal = options.terminal ?? STANDARD_TERMINAL;
  }

  /** The lines entered, oldest first: the given history, then this session's (repeats once). */
  get history(): readonly string[] {
    return this.#history;
  }

  /** Read one line; null at the end of input. */
  async readLine(): Promise<string | null> {
    this.#line = this.#draft = "";
    this.#cursor = 0;
    this.#browsing = this.#history.length;
    this.#reading = true;
    this.#lastKey = "";
    this.#terminal.setRaw(true);
    this.#redraw();
    try {
      const buffer = new Uint8Array(1024);
      for (;;) {
        const count = await this.#terminal.read(buffer);
        if (count === null) return this.#finish(null);
        this.#pending += this.#decoder.decode(buffer.subarray(0, count), { stream: true });
        for (let key; (key = this.#nextKey()) !== null;) {
          const action = this.#apply(key);
          this.#lastKey = key;
          if (action === "submit") {
            if (this.#line && this.#history.at(-1) !== this.#line) this.#history.push(this.#line);
            return this.#finish(this.#line);
          }
          if (action === "eof") return this.#finish(null);
          if (action === "interrupt") {
            if (!this.#line) return this.#finish(null);
            this.#line = "";
            this.#cursor = 0;
          }
          this.#redraw();
        }
      }
    } finally {
      this.#reading = false;
      this.#terminal.setRaw(false);
    }
  }

  /**
   * Stop editing for good while a {@linkcode readLine} is pending (its read
   * is left to the process's exit): the terminal leaves raw mode.
   */
  abandon(): void {
    if (!this.#reading) return;
    this.#reading = false;
    this.#finish(null);
    this.#terminal.setRaw(false);
  }

  /** Print `text` (one or more lines) above the line being edited. */
  print(text: string): void {
    if (!this.#reading) {
      this.#write(text + "\n"); // the terminal is not raw: it turns "\n" into "\r\n"
      return;
    }
    this.#write("\r\x1b[K" + text.replaceAll("\n", "\r\n") + "\r\n");
    this.#redraw();
  }

  #finish(line: string | null): string | null {
    this.#write("\r\n");
    this.#pending = "";
    return line;
  }

  /** The next whole key (a character or an escape sequence) of pending input. */
  #nextKey(): string | null {
    if (!this.#pending) return null;
    let length = String.fromCodePoint(this.#pending.codePointAt(0)!).length;
    if (this.#pending[0] === "\x1b") {
      const rest = this.#pending.slice(1);
      const sequence = /^(?:\[[0-9;]*[~A-Za-z]|O[A-Za-z])/.exec(rest);
      if (sequence) length += sequence[0].length;
      else if (/^(?:\[[0-9;]*|O)?$/.test(rest)) return null;
    }
    const key = this.#pending.slice(0, length);
    this.#pending = this.#pending.slice(length);
    return key;
  }

  #apply(key: string): Action {
    switch (key) {
      case "\r":
      case "\n":
        return "submit";
      case "\x03":
        return "interrupt";
      case "\x04":
        if (!this.#line) return "eof";
        this.#delete(this.#cursor, this.#cursor + 1);
        return null;
      case "\x7f":
      case "\x08":
        this.#delete(this.#cursor - 1, this.#cursor);
        return null;
      case "\x1b[3~":
        this.#delete(this.#cursor, this.#cursor + 1);
        return null;
      case "\x0b":
        this.#delete(this.#cursor, this.#line.length);
        return null;
      case "\x15":
        this.#delete(0, this.#cursor);
        return null;
      case "\x1b[D":
      case "\x1bOD":
        this.#cursor = Math.max(0, this.#cursor - 1);
        return null;
      case "\x1b[C":
      case "\x1bOC":
        this.#cursor = Math.min(this.#line.length, this.#cursor + 1);
        return null;
      case "\x01":
      case "\x1b[H":
      case "\x1bOH":
      case "\x1b[1~":
        this.#cursor = 0;
        return null;
      case "\x05":
      case "\x1b[F":
      case "\x1bOF":
      case "\x1b[4~":
        this.#cursor = this.#line.length;
        return null;
      case "\x1b[A":
      case "\x1bOA":
        this.#browse(-1);
        return null;
      case "\x1b[B":
      case "\x1bOB":
        this.#browse(1);
        return null;
      case "\t":
        this.#completeWord();
        return null;
    }
    if (key >= " " && key !== "\x7f" && key[0] !== "\x1b") {
      this.#line = this.#line.slice(0, this.#cursor) + key + this.#line.slice(this.#cursor);
      this.#cursor += key.length;
    }
    return null;
  }

  /** Tab: complete the word before the cursor, or list the candidates (see the module). */
  #completeWord(): void {
    if (!this.#complete) return;
    const { start, candidates } = this.#complete(this.#line.slice(0, this.#cursor));
    const word = this.#line.slice(start, this.#cursor);
    const common = commonPrefix(candidates);
    const insert = common.startsWith(word)
      ? common.slice(word.length) + (candidates.length === 1 && !/[=.]$/.test(common) ? " " : "")
      : "";
    if (insert) {
      this.#line = this.#line.slice(0, this.#cursor) + insert + this.#line.slice(this.#cursor);
      this.#cursor += insert.length;
    } else if (candidates.length > 1 && this.#lastKey === "\t") {
      this.print(formatColumns(candidates, this.#terminal.columns()));
    } else {
      this.#write("\x07");
    }
  }

  #delete(from: number, to: number): void {
    if (from < 0 || to > this.#line.length || from >= to) return;
    this.#line = this.#line.slice(0, from) + this.#line.slice(to);
    this.#cursor = from;
  }

  /** Move `step` entries through the history (the draft is after the last entry). */
  #browse(step: number): void {
    const target = this.#browsing + step;
    if (target < 0 || target > this.#history.length) return;
    if (this.#browsing === this.#history.length) this.#draft = this.#line;
    this.#browsing = target;
    this.#line = target === this.#history.length ? this.#draft : this.#history[target];
    this.#cursor = this.#line.length;
  }

  #redraw(): void {
    const back = this.#line.length - this.#cursor;
    this.#write(
      "\r\x1b[K" + this.prompt + this.#line + (back > 0 ? `\x1b[${back}D` : ""),
    );
  }

  #write(text: string): void {
    const data = encoder.encode(text);
    for (let done = 0; done < data.length;) {
      done += this.#terminal.writeSync(data.subarray(done));
    }
  }
}

/** The longest text every one of `words` starts with ("" for none). */
function commonPrefix(words: readonly string[]): string {
  if (words.length === 0) return "";
  let prefix = words[0];
  for (const word of words) {
    while (!word.startsWith(prefix)) prefix = prefix.slice(0, -1);
  }
  return prefix;
}
