/**
 * The other NBD servers the client is tested against, started the way their
 * users start them: nbdkit (any plugin), qemu-storage-daemon with an NBD
 * export, and nbd-server (the reference server) in its daemon mode. Each
 * returns a {@linkcode ServerProcess} like denbd and qemu-nbd do.
 *
 * @module
 */

import { join } from "node:path";
import { freePort, launch, type ServerProcess } from "./harness.ts";

/** Options shared by the peer starters. */
export interface PeerOptions {
  /** Export name (default ""). */
  readonly exportName?: string;
  /** Serve read-only. */
  readonly readOnly?: boolean;
}

/**
 * nbdkit in the foreground with `plugin` and its `key=value` arguments; with
 * `tls`, nbdkit's TLS options (`--tls-certificates=DIR`, `--tls-psk=FILE`)
 * and `--tls=require`, its URI then `nbds://`.
 */
export function startNbdkit(
  plugin: string,
  pluginArgs: readonly string[],
  options: PeerOptions & { tls?: readonly string[] } = {},
): Promise<ServerProcess> {
  const port = freePort();
  const name = options.exportName ?? "";
  return launch({
    command: "nbdkit",
    args: [
      "-f",
      "--exit-with-parent",
      "-i",
      "127.0.0.1",
      "-p",
      String(port),
      ...(options.readOnly ? ["-r"] : []),
      ...(name ? ["-e", name] : []),
      ...(options.tls ? ["--tls=require", ...options.tls] : []),
      plugin,
      ...pluginArgs,
    ],
    uri: `nbd${options.tls ? "s" : ""}://127.0.0.1:${port}/${encodeURIComponent(name)}`,
    listen: { hostname: "127.0.0.1", port },
  });
}

/** qemu-storage-daemon exporting `image` (raw) over NBD, optionally with allocation depth. */
export function startQemuStorageDaemon(
  image: string,
  options: PeerOptions & { allocationDepth?: boolean } = {},
): Promise<ServerProcess> {
  const port = freePort();
  const name = options.exportName ?? "disk";
  const exportOptions = [
    "type=nbd",
    "id=export0",
    "node-name=format0",
    `name=${name}`,
    `writable=${options.readOnly ? "off" : "on"}`,
    ...(options.allocationDepth ? ["allocation-depth=on"] : []),
  ];
  return launch({
    command: "qemu-storage-daemon",
    args: [
      "--blockdev",
      `driver=file,node-name=file0,filename=${image.replaceAll(",", ",,")}`,
      "--blockdev",
      "driver=raw,node-name=format0,file=file0",
      "--nbd-server",
      `addr.type=inet,addr.host=127.0.0.1,addr.port=${port}`,
      "--export",
      exportOptions.join(","),
    ],
    uri: `nbd://127.0.0.1:${port}/${encodeURIComponent(name)}`,
    listen: { hostname: "127.0.0.1", port },
  });
}

/**
 * nbd-server, the reference server, in its daemon mode (it forks and the
 * launcher exits), configured by a file written into `dir`.
 */
export async function startNbdServer(
  dir: string,
  image: string,
  options: PeerOptions = {},
): Promise<ServerProcess> {
  const port = freePort();
  const name = options.exportName ?? "disk";
  const config = join(dir, `nbd-server-${port}.conf`);
  const pidFile = join(dir, `nbd-server-${port}.pid`);
  await Deno.writeTextFile(
    config,
    [
      "[generic]",
      "    listenaddr = 127.0.0.1",
      `    port = ${port}`,
      "    allowlist = true",
      `[${name}]`,
      `    exportname = ${image}`,
      `    readonly = ${options.readOnly ? "true" : "false"}`,
      "",
    ].join("\n"),
  );
  return launch({
    command: "nbd-server",
    args: ["-C", config, "-p", pidFile],
    uri: `nbd://127.0.0.1:${port}/${encodeURIComponent(name)}`,
    listen: { hostname: "127.0.0.1", port },
    daemonPidFile: pidFile,
  });
}

/**
 * A daemon with qemu-storage-daemon's command line (`command`: the program
 * and its leading arguments, so qsd or `denbd daemon`) exporting node
 * `nodeName` from `blockdevs` (each a `--blockdev` value) over NBD on the Unix
 * socket `socket`, with extra export options such as `allocation-depth=on`.
 */
export function startDaemonExport(
  command: readonly [string, readonly string[]],
  blockdevs: readonly string[],
  nodeName: string,
  socket: string,
  options: PeerOptions & { exportOptions?: readonly string[] } = {},
): Promise<ServerProcess> {
  const name = options.exportName ?? "disk";
  const exportOptions = [
    "type=nbd",
    "id=export0",
    `node-name=${nodeName}`,
    `name=${name}`,
    `writable=${options.readOnly ? "off" : "on"}`,
    ...(options.exportOptions ?? []),
  ];
  return launch({
    command: command[0],
    args: [
      ...command[1],
      ...blockdevs.flatMap((blockdev) => ["--blockdev", blockdev]),
      "--nbd-server",
      `addr.type=unix,addr.path=${socket.replaceAll(",", ",,")}`,
      "--export",
      exportOptions.join(","),
    ],
    uri: `nbd+unix:///${encodeURIComponent(name)}?socket=${socket}`,
    listen: socket,
  });
}
