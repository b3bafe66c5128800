/**
 * The daemon's options (qemu-storage-daemon's getopt table, with the keyval
 * forms each argument may take) seen as a {@linkcode FlagTable}, so the
 * completion and the man page treat `denbd daemon` as every other command.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { flagTableOfOptions } from "./daemon-flags.ts";
 * const table = flagTableOfOptions({
 *   pidfile: { argument: true, value: "FILE", early: true, help: "write the process id to FILE" },
 *   monitor: { argument: true, early: false, syntax: [["chardev=ID"]], help: "a QMP monitor" },
 * });
 * assert.equal(table.pidfile.value, "FILE");
 * assert.equal(table.monitor.value, "OPTIONS");
 * assert.equal(table.monitor.help, "a QMP monitor\n  chardev=ID");
 * assert.equal(table.monitor.multiple, true);
 * ```
 * @module
 */

import type { FlagSpec, FlagTable } from "./flags.ts";
import { wrapSyntax } from "../qmp/schema-help.ts";

/** One qemu-storage-daemon option; the order options are applied in is the command line's. */
export interface GetoptOption {
  /** One-letter spelling, if any. */
  readonly short?: string;
  /** The option takes an argument. */
  readonly argument: boolean;
  /** Name of a plain argument in help (keyval options show their `syntax` instead). */
  readonly value?: string;
  /** Handled in the first pass (before anything is created) rather than in order; not repeated. */
  readonly early: boolean;
  /**
   * The forms the argument may take, each as the pieces {@link wrapSyntax}
   * joins into lines: read off the QAPI type for options that have one.
   */
  readonly syntax?: readonly (readonly string[])[];
  /** What the option does; lines may be broken with "\n". */
  readonly help: string;
}

/** The value name of an option argument that has forms instead of a name. */
const FORMS_VALUE = "OPTIONS";

/** Width of the lines a form is wrapped into. */
const FORM_WIDTH = 56;

/**
 * The daemon's `options` as a flag table. An option's forms follow its help,
 * one per line indented by two spaces (wrapped lines by four), the way help
 * texts show literal lines.
 */
export function flagTableOfOptions(options: Readonly<Record<string, GetoptOption>>): FlagTable {
  return Object.fromEntries(
    Object.entries(options).map(([long, option]) => [long, flagSpecOf(option)]),
  );
}

function flagSpecOf(option: GetoptOption): FlagSpec {
  const value = option.argument ? option.value ?? FORMS_VALUE : undefined;
  const forms = (option.syntax ?? []).flatMap((form) =>
    wrapSyntax(form, FORM_WIDTH).map((line, i) => (i ? "    " : "  ") + line)
  );
  const help = [option.help.replaceAll("\n", " "), ...forms].join("\n");
  return {
    ...(option.short ? { short: option.short } : {}),
    ...(value ? { value } : {}),
    help,
    ...(option.argument && !option.early ? { multiple: true } : {}),
  };
}
