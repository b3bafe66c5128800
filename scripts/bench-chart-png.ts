/**
 * SVG to PNG through `rsvg-convert` (Debian's librsvg2-bin), spawned with the SVG on its stdin:
 * the benchmark's charts are drawn as SVG and shown as PNG.
 */

/** The converter program. */
export const CONVERTER = "rsvg-convert";
/** The Debian package that installs it, named in the error when it is missing. */
export const CONVERTER_PACKAGE = "librsvg2-bin";
const LIMIT_MS = 60_000;

/** Runs the converter with `args` and `input` on stdin, bounded in time; returns its stdout. */
async function convert(args: string[], input: Uint8Array): Promise<Uint8Array> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(CONVERTER, {
      args,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(
        `${CONVERTER} not found: install Debian's ${CONVERTER_PACKAGE} to draw charts`,
      );
    }
    throw e;
  }
  const timer = setTimeout(() => child.kill("SIGKILL"), LIMIT_MS);
  try {
    const writer = child.stdin.getWriter();
    // A converter that exits early closes its stdin; its exit status says why.
    await writer.write(input).catch(() => {});
    await writer.close().catch(() => {});
    const out = await child.output();
    if (!out.success) {
      const why = out.signal ? `killed by ${out.signal}` : `exit ${out.code}`;
      const err = new TextDecoder().decode(out.stderr).trim();
      throw new Error(`${CONVERTER} failed (${why}): ${err}`);
    }
    return out.stdout;
  } finally {
    clearTimeout(timer);
  }
}

/** Throws the missing-package error early, before a long run, when the converter is not there. */
export async function checkConverter(): Promise<void> {
  await convert(["--version"], new Uint8Array());
}

/** Renders an SVG document as PNG bytes at the SVG's own size. */
export function svgToPng(svg: string): Promise<Uint8Array> {
  return convert(["--format=png"], new TextEncoder().encode(svg));
}
