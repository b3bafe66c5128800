/**
 * A subcommand's --help text read back into its parts: the synopsis (the
 * "Usage:" lines), the prose paragraphs without the flag lines (those come
 * from the flag table), and the positional arguments a synopsis names. The
 * man pages and the completion scripts are built from these, so a command's
 * help stays the one place its usage is written.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { positionalsOf, readHelp } from "./help-text.ts";
 * const help = readHelp("Usage: denbd copy [OPTIONS] SOURCE DEST\nCopy.\n\n  -h, --help  help");
 * assert.deepEqual(help.synopsis, ["denbd copy [OPTIONS] SOURCE DEST"]);
 * assert.deepEqual(help.paragraphs, [["Copy."]]);
 * assert.deepEqual(positionalsOf(help.synopsis[0], {}), [["SOURCE"], ["DEST"]]);
 * ```
 * @module
 */

import type { FlagTable } from "./flags.ts";

/** The parts of a --help text. */
export interface HelpText {
  /** Each "Usage:" form, without the word "Usage:" ("denbd serve [OPTIONS] [FILE]"). */
  readonly synopsis: readonly string[];
  /** The other paragraphs, lines as written, flag lines left out. */
  readonly paragraphs: readonly (readonly string[])[];
}

const USAGE = "Usage: ";

/** Split `text` (a --help text) into its synopsis and its prose paragraphs. */
export function readHelp(text: string): HelpText {
  const lines = text.split("\n");
  const synopsis: string[] = [];
  if (lines[0]?.startsWith(USAGE)) {
    synopsis.push(lines.shift()!.slice(USAGE.length).trim());
    while (
      lines.length && /^\s+\S/.test(lines[0]) &&
      synopsis[0].startsWith(lines[0].trim().split(" ")[0])
    ) {
      synopsis.push(lines.shift()!.trim());
    }
  }
  const paragraphs: string[][] = [[]];
  for (const line of lines) {
    if (line.trim() === "") paragraphs.push([]);
    else paragraphs[paragraphs.length - 1].push(line.trimEnd());
  }
  return {
    synopsis,
    paragraphs: paragraphs.filter((paragraph) => paragraph.length && !isFlagLine(paragraph[0])),
  };
}

/** A line of formatted flag help ("  -p, --port=PORT  ...", "      --json  ..."). */
function isFlagLine(line: string): boolean {
  return /^\s+--?[A-Za-z?]/.test(line);
}

/**
 * The positional arguments of a synopsis `form`, each as its alternatives
 * ("SOCKET|HOST:PORT" gives ["SOCKET", "HOST:PORT"]): every word that is
 * not the program, the command, a flag, the value of a flag of `flags`, the
 * OPTIONS placeholder or a repetition mark ("..."). Brackets (optional
 * parts) are dropped; words around a lone "|" are one argument's alternatives.
 */
export function positionalsOf(form: string, flags: FlagTable): string[][] {
  const valued = new Set<string>();
  for (const [long, spec] of Object.entries(flags)) {
    if (!spec.value) continue;
    valued.add(`--${long}`);
    if (spec.short) valued.add(`-${spec.short}`);
  }
  const words = form.split(/\s+/).slice(2).map((word) => word.replace(/^\[+|\]+$/g, ""));
  const positionals: string[][] = [];
  let alternative = false;
  for (let i = 0; i < words.length; i++) {
    const word = words[i];
    if (word === "|") alternative = positionals.length > 0;
    if (word === "" || word === "|" || word === "..." || /^options$/i.test(word)) continue;
    if (word.startsWith("-")) {
      if (!word.includes("=") && word.split("|").some((spelling) => valued.has(spelling))) i++;
      continue;
    }
    if (alternative) positionals.at(-1)!.push(...word.split("|"));
    else positionals.push(word.split("|"));
    alternative = false;
  }
  return positionals;
}
