/**
 * A minimal line editor for interactive shells on a terminal: a prompt,
 * cursor movement (arrows, Home/End, Ctrl-A/E), deletion (Backspace,
 * Delete, Ctrl-K/U), the session's history on the up and down arrows, and
 * output printed above the line being edited. Ctrl-D on an empty line (or
 * the end of input) ends input; Ctrl-C clears the line, or ends input on an
 * empty one. The terminal is in raw mode only while a line is being read.
 *
 * @example
 * ```ts ignore
 * import { LineEditor } from "./line-editor.ts";
 * const editor = new LineEditor("> ");
 * for (let line; (line = await editor.readLine()) !== null;) editor.print(`you said ${line}`);
 * ```
 * @module
 */

const encoder = new TextEncoder();

/** What a key does to the line being edited. */
type Action = "submit" | "eof" | "interrupt" | null;

/** Reads lines from the terminal with editing and history. */
export class LineEditor {
  readonly #prompt: string;
  readonly #history: string[] = [];
  readonly #decoder = new TextDecoder();
  #line = "";
  #cursor = 0;
  /** Index into history while browsing it (history.length: the draft). */
  #browsing = 0;
  #draft = "";
  #reading = false;
  #pending = "";

  /** An editor that shows `prompt` before each line. */
  constructor(prompt: string) {
    this.#prompt = prompt;
  }

  /** Read one line; null at the end of input. */
  async readLine(): Promise<string | null> {
    this.#line = this.#draft = "";
    this.#cursor = 0;
    this.#browsing = this.#history.length;
    this.#reading = true;
    Deno.stdin.setRaw(true);
    this.#redraw();
    try {
      const buffer = new Uint8Array(1024);
      for (;;) {
        const count = await Deno.stdin.read(buffer);
        if (count === null) return this.#finish(null);
        this.#pending += this.#decoder.decode(buffer.subarray(0, count), { stream: true });
        for (let key; (key = this.#nextKey()) !== null;) {
          const action = this.#apply(key);
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
      Deno.stdin.setRaw(false);
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
    Deno.stdin.setRaw(false);
  }

  /** Print `text` (one or more lines) above the line being edited. */
  print(text: string): void {
    const output = text.replaceAll("\n", "\r\n") + "\r\n";
    this.#write(this.#reading ? "\r\x1b[K" + output : output);
    if (this.#reading) this.#redraw();
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
    }
    if (key >= " " && key !== "\x7f" && key[0] !== "\x1b") {
      this.#line = this.#line.slice(0, this.#cursor) + key + this.#line.slice(this.#cursor);
      this.#cursor += key.length;
    }
    return null;
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
      "\r\x1b[K" + this.#prompt + this.#line + (back > 0 ? `\x1b[${back}D` : ""),
    );
  }

  #write(text: string): void {
    const data = encoder.encode(text);
    for (let done = 0; done < data.length;) done += Deno.stdout.writeSync(data.subarray(done));
  }
}
