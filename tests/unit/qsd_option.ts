/**
 * Running the real qemu-storage-daemon with one option, for the unit tests
 * that replay their recorded messages against it when it is installed.
 *
 * @module
 */

/** The program whose messages the option parsers reproduce. */
export const QSD = "qemu-storage-daemon";

/** True when qemu-storage-daemon is installed and these tests may run it. */
export function qsdAvailable(): boolean {
  try {
    if (Deno.permissions.querySync({ name: "run", command: QSD }).state !== "granted") {
      return false;
    }
    return new Deno.Command(QSD, { args: ["-V"], stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
}

/** Run qsd with one option that must fail at once; return its exit code and stderr. */
export async function runQsd(
  option: string,
  arg: string,
): Promise<{ code: number; stderr: string }> {
  const child = new Deno.Command(QSD, {
    args: [option, arg],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  const { code, stderr } = await child.output();
  clearTimeout(timer);
  return { code, stderr: new TextDecoder().decode(stderr) };
}
