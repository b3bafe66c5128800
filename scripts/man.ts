/**
 * Writes denbd's man pages (denbd.1 and denbd-COMMAND.1 for every
 * subcommand), generated from the help texts and flag tables, into the
 * section folders of dist/man/ (man1/) unless a directory is given: the
 * layout of a MANPATH entry, for packaging. Nothing generated is kept in
 * git: run it at build time.
 *
 * Usage: deno run --allow-read --allow-write scripts/man.ts [DIRECTORY]
 */

import { dirname, extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DENBD } from "../main.ts";
import { manPages } from "../src/cli/man-page.ts";
import { VERSION } from "../src/version.ts";

/** Write every page into its section's folder of `directory`; resolves to the files written. */
export async function writeManPages(directory: string): Promise<string[]> {
  const written: string[] = [];
  for (const [file, text] of manPages(DENBD, VERSION)) {
    const section = join(directory, `man${extname(file).slice(1)}`);
    await Deno.mkdir(section, { recursive: true });
    await Deno.writeTextFile(join(section, file), text);
    written.push(join(section, file));
  }
  return written;
}

if (import.meta.main) {
  const root = join(dirname(fileURLToPath(import.meta.url)), "..");
  const written = await writeManPages(Deno.args[0] ?? join(root, "dist", "man"));
  console.log(`wrote ${written.length} man pages:\n${written.join("\n")}`);
}
