/**
 * Builds the one-file denbd: `deno bundle` of main.ts into one JavaScript
 * file (dist/denbd.js unless a path is given), which then starts with a
 * `#!/usr/bin/env -S deno run --allow-all` line and has its run bit set, so
 * it runs directly (`./dist/denbd.js serve ...`) wherever `deno` is on the
 * PATH, as well as with `deno run -A dist/denbd.js`.
 *
 * Usage: deno run --allow-read --allow-write --allow-run scripts/bundle.ts [OUTPUT]
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { messageOf } from "../src/errors.ts";

/** The first line of the bundle: run it with deno, with every permission denbd needs. */
export const BUNDLE_SHEBANG = "#!/usr/bin/env -S deno run --allow-all";

/** Bundle main.ts into `output` and make the file run on its own. */
export async function bundle(output: string): Promise<void> {
  const root = join(dirname(fileURLToPath(import.meta.url)), "..");
  const built = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--quiet", "--output", output, join(root, "main.ts")],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!built.success) throw new Error(`deno bundle failed (exit code ${built.code})`);
  const code = await Deno.readTextFile(output);
  await Deno.writeTextFile(output, `${BUNDLE_SHEBANG}\n${code.replace(/^#![^\n]*\n/, "")}`);
  await Deno.chmod(output, 0o755);
}

if (import.meta.main) {
  const output = Deno.args[0] ?? "dist/denbd.js";
  try {
    await bundle(output);
    console.log(`wrote ${output}`);
  } catch (error) {
    console.error(`bundle: ${messageOf(error)}`);
    Deno.exit(1);
  }
}
