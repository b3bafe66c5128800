/**
 * Writes denbd's man pages (denbd.1 and denbd-COMMAND.1 for every
 * subcommand), generated from the help texts and flag tables, to
 * dist/man/ unless a directory is given, for packaging. Nothing generated
 * is kept in git: run it at build time.
 *
 * Usage: deno run --allow-read --allow-write scripts/man.ts [DIRECTORY]
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DENBD } from "../main.ts";
import { manPages } from "../src/cli/man-page.ts";
import { VERSION } from "../src/version.ts";

/** Write every page into `directory` (created if missing); resolves to the files written. */
export async function writeManPages(directory: string): Promise<string[]> {
  await Deno.mkdir(directory, { recursive: true });
  const written: string[] = [];
  for (const [file, text] of manPages(DENBD, VERSION)) {
    await Deno.writeTextFile(join(directory, file), text);
    written.push(join(directory, file));
  }
  return written;
}

if (import.meta.main) {
  const root = join(dirname(fileURLToPath(import.meta.url)), "..");
  const written = await writeManPages(Deno.args[0] ?? join(root, "dist", "man"));
  console.log(`wrote ${written.length} man pages to ${dirname(written[0])}`);
}
