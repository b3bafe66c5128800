/**
 * The layering check of `deno task check`: every import in `main.ts` and
 * `src/` goes downwards along {@linkcode LAYERS} (or stays in its own
 * group), no two files import each other through any chain, and the layer
 * table in docs/architecture.md says what {@linkcode LAYERS} says.
 *
 * Imports are read by Deno's own parser (`deno info --json`), so static
 * imports, `import type`, `export ... from` and dynamic imports all count.
 *
 * Run it from the repository root with `deno task layers` (part of
 * `deno task check`): it prints what is wrong and exits 1, or prints one
 * line and exits 0.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { groupOf } from "./check-layers.ts";
 * assert.equal(groupOf("src/nbd/server/handshake.ts")?.name, "nbd-server");
 * assert.equal(groupOf("src/nbd/wire.ts")?.name, "nbd-protocol");
 * assert.equal(groupOf("tests/unit/wire_test.ts"), undefined);
 * ```
 *
 * @module
 */

/** One group of files in the layer table. */
export interface LayerGroup {
  /**
   * Its layer: 1 is the top. A file may import files of its own group and
   * of groups with a larger layer number; never a smaller number, and never
   * another group of the same number.
   */
  readonly layer: number;
  /** Its name, for messages and the documentation's table. */
  readonly name: string;
  /**
   * Its files: `dir/**` is everything under a folder, `dir/*.ts` the
   * TypeScript files directly in it, anything else one file.
   */
  readonly files: readonly string[];
  /** What it owns, in a few words. */
  readonly owns: string;
}

/**
 * The layers of denbd, top to bottom: the one table the check enforces and
 * docs/architecture.md quotes.
 */
export const LAYERS: readonly LayerGroup[] = [
  {
    layer: 1,
    name: "cli",
    files: ["main.ts", "src/cli/**"],
    owns: "subcommand dispatch, flags, one file per subcommand, what is printed, exit codes",
  },
  {
    layer: 2,
    name: "daemon",
    files: ["src/daemon/**"],
    owns: "the Daemon: nodes, objects, NBD server, exports, QMP monitors and commands",
  },
  {
    layer: 2,
    name: "copy",
    files: ["src/copy/**"],
    owns: "the copy engine: ends (NBD, file, stream), plan, transfer, progress",
  },
  {
    layer: 3,
    name: "nbd-server",
    files: ["src/nbd/server/**"],
    owns: "NBD server: listener, handshake, transmission, exports, metadata contexts",
  },
  {
    layer: 3,
    name: "nbd-client",
    files: ["src/nbd/client/**"],
    owns: "NBD client library: URIs, negotiation, pipelined requests",
  },
  {
    layer: 4,
    name: "nbd-protocol",
    files: ["src/nbd/*.ts"],
    owns: "NBD vocabulary (one table), wire codecs, errno mapping",
  },
  {
    layer: 5,
    name: "block",
    files: ["src/block/**"],
    owns: "block nodes (file, raw, memory), dirty bitmaps, image locks, libc",
  },
  {
    layer: 5,
    name: "qmp",
    files: ["src/qmp/**"],
    owns: "QMP: JSON stream, schema, input visitor, command table, monitor, client, keyval",
  },
  {
    layer: 5,
    name: "tls",
    files: ["src/tls/**"],
    owns: "TLS through GnuTLS: credentials, sessions over a byte stream, peer checks",
  },
  {
    layer: 5,
    name: "authz",
    files: ["src/authz/**"],
    owns: "authorization of peer identities: simple, list and list-file rules",
  },
  {
    layer: 6,
    name: "io",
    files: ["src/io/**"],
    owns: "byte streams: buffered reader, write queue, buffer pool",
  },
  {
    layer: 6,
    name: "net",
    files: ["src/net/**"],
    owns: "socket addresses",
  },
  {
    layer: 7,
    name: "base",
    files: ["src/*.ts"],
    owns: "errors as values with a kind, logging, version",
  },
];

/**
 * Files outside the layers that any layer may import: the manifest, read
 * as JSON for the version.
 */
export const SHARED_DATA_FILES: readonly string[] = ["deno.json"];

/** The header of the layer table in docs/architecture.md. */
const TABLE_HEADER = ["layer", "group", "files", "owns"] as const;

/** Where the documentation's copy of the table is. */
export const ARCHITECTURE_DOC = "docs/architecture.md";

/** One import of a module, as `deno info` found it. */
export interface ModuleImport {
  /** The imported file, relative to the repository root with `/`, or the specifier when it is not a file. */
  readonly target: string;
  /** The line of the import (1-based). */
  readonly line: number;
}

/** Every checked file (relative path) and what it imports. */
export type ModuleGraph = ReadonlyMap<string, readonly ModuleImport[]>;

/** Whether an import target is a package or built-in (`node:`, `npm:`, ...), which no layer owns. */
function isPackage(target: string): boolean {
  return /^[a-z]+:/.test(target) && !target.startsWith("file:");
}

/** Whether `path` (relative, with `/`) matches one of a group's file patterns. */
function matches(pattern: string, path: string): boolean {
  if (pattern.endsWith("/**")) return path.startsWith(pattern.slice(0, -2));
  if (pattern.endsWith("/*.ts")) {
    const folder = pattern.slice(0, -4);
    return path.startsWith(folder) && !path.slice(folder.length).includes("/") &&
      path.endsWith(".ts");
  }
  return path === pattern;
}

/** The group `path` (relative to the repository root, with `/`) belongs to, if any. */
export function groupOf(path: string): LayerGroup | undefined {
  return LAYERS.find((group) => group.files.some((pattern) => matches(pattern, path)));
}

/**
 * What is wrong with the imports of `graph`: a file in no group, an import
 * upwards, an import of another group of the same layer, an import of a file
 * outside the layers. One message per finding, naming the file and line,
 * sorted by file.
 */
export function findLayerViolations(graph: ModuleGraph): string[] {
  const findings: string[] = [];
  for (const [file, imports] of graph) {
    const from = groupOf(file);
    if (from === undefined) {
      findings.push(`${file}: in no layer; add its folder to LAYERS in scripts/check-layers.ts`);
      continue;
    }
    for (const { target, line } of imports) {
      if (isPackage(target) || SHARED_DATA_FILES.includes(target)) continue;
      const where = `${file}:${line} imports ${target}`;
      const to = groupOf(target);
      if (to === undefined) {
        findings.push(`${where}, which is outside the layers`);
      } else if (to.layer < from.layer) {
        findings.push(
          `${where}: ${from.name} (layer ${from.layer}) may not import ${to.name} (layer ${to.layer}), which is above it`,
        );
      } else if (to.layer === from.layer && to !== from) {
        findings.push(
          `${where}: ${from.name} may not import ${to.name}, another group of layer ${from.layer}`,
        );
      }
    }
  }
  return findings.sort();
}

/**
 * The import cycles of `graph`, one message per strongly connected set of
 * files (Tarjan's algorithm), each showing one shortest cycle through it.
 */
export function findImportCycles(graph: ModuleGraph): string[] {
  const edges = new Map<string, string[]>();
  for (const [file, imports] of graph) {
    edges.set(file, [...new Set(imports.map((i) => i.target).filter((t) => graph.has(t)))]);
  }
  const index = new Map<string, number>();
  const lowLink = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const visit = (file: string): void => {
    index.set(file, index.size);
    lowLink.set(file, index.get(file)!);
    stack.push(file);
    onStack.add(file);
    for (const next of edges.get(file)!) {
      if (!index.has(next)) {
        visit(next);
        lowLink.set(file, Math.min(lowLink.get(file)!, lowLink.get(next)!));
      } else if (onStack.has(next)) {
        lowLink.set(file, Math.min(lowLink.get(file)!, index.get(next)!));
      }
    }
    if (lowLink.get(file) === index.get(file)) {
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        onStack.delete(member);
        component.push(member);
      } while (member !== file);
      components.push(component);
    }
  };
  for (const file of [...edges.keys()].sort()) if (!index.has(file)) visit(file);
  return components
    .filter((c) => c.length > 1 || edges.get(c[0])!.includes(c[0]))
    .map((component) => {
      const members = new Set(component);
      const start = [...component].sort()[0];
      const cycle = shortestCycle(start, members, edges);
      const rest = component.filter((file) => !cycle.includes(file)).sort();
      return `import cycle: ${cycle.join(" -> ")}` +
        (rest.length > 0 ? ` (also in the cycle: ${rest.join(", ")})` : "");
    })
    .sort();
}

/** The shortest path from `start` back to itself through `members` (breadth first). */
function shortestCycle(
  start: string,
  members: ReadonlySet<string>,
  edges: ReadonlyMap<string, readonly string[]>,
): string[] {
  const cameFrom = new Map<string, string>();
  let frontier = [start];
  while (frontier.length > 0) {
    const nextFrontier: string[] = [];
    for (const file of frontier) {
      for (const next of edges.get(file)!) {
        if (!members.has(next)) continue;
        if (next === start) {
          const path = [start];
          for (let at = file; at !== start; at = cameFrom.get(at)!) path.unshift(at);
          path.unshift(start);
          return path;
        }
        if (cameFrom.has(next)) continue;
        cameFrom.set(next, file);
        nextFrontier.push(next);
      }
    }
    frontier = nextFrontier;
  }
  return [start];
}

/** The rows of the layer table as docs/architecture.md writes them (cells without padding). */
export function layerTableRows(): string[][] {
  return LAYERS.map((group) => [
    String(group.layer),
    group.name,
    group.files.map((pattern) => `\`${pattern}\``).join(", "),
    group.owns,
  ]);
}

/** The layer table in Markdown, as docs/architecture.md should hold it. */
export function layerTableMarkdown(): string {
  const rows = [[...TABLE_HEADER], TABLE_HEADER.map(() => "---"), ...layerTableRows()];
  return rows.map((cells) => `| ${cells.join(" | ")} |`).join("\n");
}

/**
 * What differs between the layer table in `markdown` (the first table whose
 * header is layer | group | files | owns) and {@linkcode LAYERS}; empty
 * when they agree.
 */
export function checkLayerTable(markdown: string): string[] {
  const lines = markdown.split("\n").map((line) => line.trim());
  const cellsOf = (line: string) => line.slice(1, -1).split("|").map((cell) => cell.trim());
  const header = lines.findIndex((line) =>
    line.startsWith("|") && cellsOf(line).join("|") === TABLE_HEADER.join("|")
  );
  const expected = layerTableRows();
  const mismatch = `the layer table of ${ARCHITECTURE_DOC} differs from LAYERS in ` +
    `scripts/check-layers.ts; it should read:\n${layerTableMarkdown()}`;
  if (header < 0) return [mismatch];
  const found: string[][] = [];
  for (let i = header + 2; i < lines.length && lines[i].startsWith("|"); i++) {
    found.push(cellsOf(lines[i]));
  }
  const same = found.length === expected.length &&
    found.every((cells, i) => cells.join("|") === expected[i].join("|"));
  return same ? [] : [mismatch];
}

/** `path` relative to `root`, with `/`, or undefined when it is not under `root`. */
function relativeTo(root: string, path: string): string | undefined {
  const prefix = root.endsWith("/") ? root : `${root}/`;
  return path.startsWith(prefix) ? path.slice(prefix.length) : undefined;
}

/** Every `.ts` file of `main.ts` and `src/` under `root`, relative, sorted. */
async function layeredFiles(root: string): Promise<string[]> {
  const files: string[] = [];
  const walk = async (folder: string): Promise<void> => {
    for await (const entry of Deno.readDir(`${root}/${folder}`)) {
      const path = `${folder}/${entry.name}`;
      if (entry.isDirectory) await walk(path);
      else if (entry.isFile && path.endsWith(".ts")) files.push(path);
    }
  };
  try {
    await Deno.stat(`${root}/main.ts`);
    files.push("main.ts");
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  await walk("src");
  return files.sort();
}

/** The shape of `deno info --json` this script reads. */
interface DenoInfo {
  readonly modules: readonly {
    readonly specifier: string;
    readonly error?: string;
    readonly dependencies?: readonly {
      readonly specifier: string;
      readonly code?: DenoInfoResolved;
      readonly type?: DenoInfoResolved;
    }[];
  }[];
}

/** One resolved side (code or type) of a dependency in `deno info --json`. */
interface DenoInfoResolved {
  readonly specifier?: string;
  readonly span: { readonly start: { readonly line: number } };
}

/**
 * The import graph of `main.ts` and `src/` under `root` (an absolute path),
 * read with `deno info --json` on a temporary module importing every file.
 */
export async function readModuleGraph(root: string): Promise<ModuleGraph> {
  const files = await layeredFiles(root);
  const rootUrl = new URL(`file://${root}/`);
  const entry = await Deno.makeTempFile({ prefix: "denbd-layers-", suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      entry,
      files.map((file) => `import "${new URL(file, rootUrl).href}";\n`).join(""),
    );
    let config = ["--no-config"];
    try {
      await Deno.stat(`${root}/deno.json`);
      config = ["--config", `${root}/deno.json`];
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", "--no-lock", ...config, entry],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    if (!output.success) {
      throw new Error(`deno info failed: ${new TextDecoder().decode(output.stderr)}`);
    }
    const info = JSON.parse(new TextDecoder().decode(output.stdout)) as DenoInfo;
    const graph = new Map<string, ModuleImport[]>();
    for (const module of info.modules) {
      const file = module.specifier.startsWith("file:")
        ? relativeTo(root, decodeURIComponent(new URL(module.specifier).pathname))
        : undefined;
      if (file === undefined || !files.includes(file)) continue;
      if (module.error !== undefined) throw new Error(`${file}: ${module.error}`);
      graph.set(
        file,
        (module.dependencies ?? []).map((dependency) => {
          const resolved = dependency.code ?? dependency.type!;
          const url = resolved.specifier ?? dependency.specifier;
          const target = url.startsWith("file:")
            ? relativeTo(root, decodeURIComponent(new URL(url).pathname)) ?? url
            : url;
          return { target, line: resolved.span.start.line + 1 };
        }),
      );
    }
    return graph;
  } finally {
    await Deno.remove(entry);
  }
}

/** Everything the check finds under `root` (absolute): layer violations, then cycles. */
export async function checkLayers(root: string): Promise<string[]> {
  const graph = await readModuleGraph(root);
  return [...findLayerViolations(graph), ...findImportCycles(graph)];
}

if (import.meta.main) {
  const root = Deno.cwd();
  const doc = await Deno.readTextFile(`${root}/${ARCHITECTURE_DOC}`).catch((error) => {
    if (error instanceof Deno.errors.NotFound) return "";
    throw error;
  });
  const findings = [...await checkLayers(root), ...checkLayerTable(doc)];
  for (const finding of findings) console.error(finding);
  if (findings.length > 0) Deno.exit(1);
  console.log("layers: every import goes downwards, no cycles");
}
