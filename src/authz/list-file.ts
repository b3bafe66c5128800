/**
 * authz-list-file: an authz-list whose policy and rules live in a JSON file
 * (`{"policy": "deny", "rules": [{"match": "CN=*", "policy": "allow",
 * "format": "glob"}]}`), read when the object is created and, with
 * `refresh` (QEMU's default on Linux, where it has inotify), read again
 * whenever the file is created or modified in its directory. A file that
 * fails to load again denies everyone until it loads again, as QEMU's
 * does; the failure is reported through `warn`. Removing the file changes
 * nothing (QEMU ignores deletions too).
 *
 * @module
 */

import { basename, dirname, resolve } from "node:path";
import { DenbdError, messageOf, osErrorText } from "../errors.ts";
import { readFileLikeGlib } from "../glib-file.ts";
import type { Authorizer } from "./authorizer.ts";
import {
  AUTHZ_POLICIES,
  AUTHZ_RULE_FORMAT_NAMES,
  type AuthzListSettings,
  type AuthzRule,
  ListAuthorizer,
} from "./list.ts";

/** Whether a list file is watched unless told (QEMU built with inotify: Linux). */
export const DEFAULT_REFRESH = true;

/** The members of a rule in the file, and whether each must be there. */
const RULE_MEMBERS: Readonly<Record<keyof AuthzRule, boolean>> = {
  match: true,
  policy: true,
  format: false,
};

/** The members of the file's object. */
const LIST_MEMBERS: readonly (keyof AuthzListSettings)[] = ["policy", "rules"];

/** Settings of a list-file authorizer. */
export interface ListFileOptions {
  /** The JSON file. */
  readonly filename: string;
  /** Watch the file and reload it on change; {@linkcode DEFAULT_REFRESH} when absent. */
  readonly refresh?: boolean;
  /** Told why a reload failed (everyone is then denied until the file loads again). */
  readonly warn?: (message: string) => void;
}

/** An authz-list read from a file, reloaded when the file changes (QEMU's authz-list-file). */
export class ListFileAuthorizer implements Authorizer {
  /** The file, as given. */
  readonly filename: string;
  /** Whether the file is watched. */
  readonly refresh: boolean;
  readonly #warn: (message: string) => void;
  /** The loaded list, or null while the file fails to load. */
  #list: ListAuthorizer | null;
  #watcher: Deno.FsWatcher | null = null;
  #watching: Promise<void> = Promise.resolve();
  #reloading: Promise<void> | null = null;
  #reloadAgain = false;
  #closed = false;

  private constructor(options: ListFileOptions, list: ListAuthorizer) {
    this.filename = options.filename;
    this.refresh = options.refresh ?? DEFAULT_REFRESH;
    this.#warn = options.warn ?? (() => {});
    this.#list = list;
  }

  /**
   * Load the file and, with refresh, start watching it. Rejects with QEMU's
   * messages: "filename not provided", "Unable to read '...': ...", "File
   * '...' must contain a JSON object", "Filename must be an absolute path"
   * (a name without a directory cannot be watched).
   */
  static async open(options: ListFileOptions): Promise<ListFileAuthorizer> {
    if (!options.filename) throw new DenbdError("invalid", "filename not provided");
    const authorizer = new ListFileAuthorizer(options, await loadListFile(options.filename));
    if (authorizer.refresh) authorizer.#watch();
    return authorizer;
  }

  /** What the loaded list says; false while the file fails to load. */
  isAllowed(identity: string): boolean {
    return this.#list?.isAllowed(identity) ?? false;
  }

  /** Stop watching; resolves once the watcher and any reload in progress have stopped. */
  async close(): Promise<void> {
    this.#closed = true;
    try {
      this.#watcher?.close();
    } catch {
      // Already closed.
    }
    await this.#watching;
    await this.#reloading;
  }

  #watch(): void {
    const directory = dirname(this.filename);
    if (directory === ".") {
      throw new DenbdError("invalid", "Filename must be an absolute path");
    }
    if (basename(this.filename) === ".") {
      throw new DenbdError("invalid", "Path has no trailing filename component");
    }
    try {
      this.#watcher = Deno.watchFs(directory, { recursive: false });
    } catch (error) {
      throw new DenbdError("io", `Unable to watch '${directory}': ${osErrorText(error)}`);
    }
    this.#watching = this.#followChanges(this.#watcher, resolve(this.filename));
  }

  async #followChanges(watcher: Deno.FsWatcher, path: string): Promise<void> {
    try {
      for await (const event of watcher) {
        if (!event.paths.some((changed) => resolve(changed) === path)) continue;
        if (event.kind === "create" || event.kind === "modify" || event.kind === "rename") {
          this.#requestReload();
        }
      }
    } catch (error) {
      if (!this.#closed) this.#warn(`${this.filename}: watching stopped: ${messageOf(error)}`);
    }
  }

  /** Reload now, or once more after the reload in progress (changes come in bursts). */
  #requestReload(): void {
    if (this.#reloading) {
      this.#reloadAgain = true;
      return;
    }
    this.#reloading = (async () => {
      do {
        this.#reloadAgain = false;
        await this.#reload();
      } while (this.#reloadAgain && !this.#closed);
      this.#reloading = null;
    })();
  }

  async #reload(): Promise<void> {
    // A file renamed away is not a new list (QEMU ignores deletions).
    if (!await exists(this.filename)) return;
    try {
      const list = await loadListFile(this.filename);
      if (!this.#closed) this.#list = list;
    } catch (error) {
      // Gone between the check and the read: a deletion too, not a broken list.
      if (this.#closed || !await exists(this.filename)) return;
      this.#list = null;
      this.#warn(messageOf(error));
    }
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Read and check a list file. */
export async function loadListFile(filename: string): Promise<ListAuthorizer> {
  let bytes: Uint8Array;
  try {
    bytes = await readFileLikeGlib(filename);
  } catch (error) {
    throw new DenbdError("not-found", `Unable to read '${filename}': ${messageOf(error)}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new DenbdError("invalid", `JSON parse error in '${filename}': ${messageOf(error)}`);
  }
  if (!isObject(value)) {
    throw new DenbdError("invalid", `File '${filename}' must contain a JSON object`);
  }
  return new ListAuthorizer(listSettings(value));
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The settings in a list file's object, checked with the messages qsd's object-add of an authz-list gives. */
function listSettings(value: Record<string, unknown>): AuthzListSettings {
  for (const key of Object.keys(value)) {
    if (!(LIST_MEMBERS as readonly string[]).includes(key)) {
      throw new DenbdError("invalid", `Parameter '${key}' is unexpected`);
    }
  }
  const rules = value.rules ?? [];
  if (!Array.isArray(rules)) throw typeError("rules", "array");
  return {
    policy: value.policy === undefined
      ? undefined
      : oneOf("policy", "policy", value.policy, AUTHZ_POLICIES),
    rules: rules.map((rule, index) => ruleOf(rule, `rules[${index}]`)),
  };
}

function ruleOf(value: unknown, name: string): AuthzRule {
  if (!isObject(value)) throw typeError(name, "object");
  for (const [member, required] of Object.entries(RULE_MEMBERS)) {
    if (required && value[member] === undefined) {
      throw new DenbdError("invalid", `Parameter '${name}.${member}' is missing`);
    }
  }
  for (const key of Object.keys(value)) {
    if (!(key in RULE_MEMBERS)) {
      throw new DenbdError("invalid", `Parameter '${name}.${key}' is unexpected`);
    }
  }
  if (typeof value.match !== "string") throw typeError(`${name}.match`, "string");
  return {
    match: value.match,
    policy: oneOf(`${name}.policy`, "policy", value.policy, AUTHZ_POLICIES),
    format: value.format === undefined
      ? undefined
      : oneOf(`${name}.format`, "format", value.format, AUTHZ_RULE_FORMAT_NAMES),
  };
}

/**
 * `value` when it is one of `choices`. QEMU names the member by its full
 * path (`rules[0].policy`) when its type is wrong, by its bare name
 * (`policy`) when its value is not in the enumeration.
 */
function oneOf<T extends string>(
  path: string,
  name: string,
  value: unknown,
  choices: readonly T[],
): T {
  if (typeof value !== "string") throw typeError(path, "string");
  if (!(choices as readonly string[]).includes(value)) {
    throw new DenbdError("invalid", `Parameter '${name}' does not accept value '${value}'`);
  }
  return value as T;
}

function typeError(name: string, expected: string): DenbdError {
  return new DenbdError("invalid", `Invalid parameter type for '${name}', expected: ${expected}`);
}
