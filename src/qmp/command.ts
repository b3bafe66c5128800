/**
 * The QMP command table: each command names its argument type (a struct,
 * or a union taken "boxed", i.e. the whole arguments object is the union),
 * its return type and a `run` function; argument validation with QEMU's
 * messages and `query-commands` are derived from the table.
 *
 * A command reports failure by throwing: a DenbdError's message becomes the
 * error reply's `desc` with class GenericError, a {@linkcode QmpError}
 * chooses another class (e.g. DeviceNotFound).
 *
 * The type of the arguments a command's `run` receives is derived from its
 * argument schema ({@linkcode commandFor} infers it), never written out.
 *
 * @example
 * ```ts
 * import { CommandTable, commandFor } from "./command.ts";
 * import { BUILTIN, member, struct } from "./schema.ts";
 * const command = commandFor<null>();
 * const echo = command({
 *   name: "x-echo",
 *   args: struct("x-echo-arg", [member("text", BUILTIN.str)]),
 *   returns: BUILTIN.str,
 *   run: (_context, args) => args.text,
 * });
 * const table = new CommandTable<null>([echo]);
 * ```
 * @module
 */

import { DenbdError, type ErrorKind, messageOf } from "../errors.ts";
import { validateInput } from "./input.ts";
import type { JsonObject } from "./json-value.ts";
import type { QapiStruct, QapiType, QapiUnion, QapiValue } from "./schema.ts";

/** QMP's error classes (QEMU's QapiErrorClass). */
export type QmpErrorClass =
  | "GenericError"
  | "CommandNotFound"
  | "DeviceNotActive"
  | "DeviceNotFound"
  | "KVMMissingCap";

/** An error replied with a specific class instead of GenericError. */
export class QmpError extends DenbdError {
  /** The class QMP reports. */
  readonly errorClass: QmpErrorClass;

  /** An error of QMP class `errorClass` (and denbd kind `kind`, for other layers). */
  constructor(errorClass: QmpErrorClass, message: string, kind: ErrorKind = "invalid") {
    super(kind, message);
    this.name = "QmpError";
    this.errorClass = errorClass;
  }
}

/** The `error` member of the reply to a command that threw `error`. */
export function errorReply(error: unknown): { class: QmpErrorClass; desc: string } {
  const errorClass = error instanceof QmpError ? error.errorClass : "GenericError";
  return { class: errorClass, desc: messageOf(error) };
}

/** The monitor a command runs on, as far as qmp_capabilities needs it. */
export interface QmpSession {
  /** Whether capabilities negotiation is complete (all commands available). */
  readonly negotiated: boolean;
  /** Complete capabilities negotiation, turning on `capabilities` (e.g. "oob"). */
  completeNegotiation(capabilities: readonly string[]): void;
}

/** What a command gets besides its arguments. */
export interface CommandContext<S> {
  /** The state the table was built for (the daemon). */
  readonly state: S;
  /** The table the command was found in. */
  readonly commands: CommandTable<S>;
  /** The monitor that received the command. */
  readonly session: QmpSession;
  /** Ask for the daemon to end once this command has replied (`quit`). */
  requestQuit(): void;
}

/** The schema of a command's arguments: a struct, or a union taken boxed. */
export type QmpArguments = QapiStruct | QapiUnion;

/** One QMP command on state `S`, with arguments of schema type `A`. */
export interface QmpCommand<S, A extends QmpArguments = QmpArguments> {
  /** The command's name, e.g. "block-export-add". */
  readonly name: string;
  /** Its arguments: a struct, or a union (boxed: the arguments object is the union). */
  readonly args: A;
  /** What it returns (absent: an empty object). */
  readonly returns?: QapiType;
  /** Whether it is deprecated (QAPI feature 'deprecated'). */
  readonly deprecated?: boolean;
  /** Whether it is available before capabilities negotiation (only qmp_capabilities). */
  readonly beforeNegotiation?: boolean;
  /**
   * Do it, given the validated arguments (their type is inferred from
   * `args` only). Resolves to the return value (undefined: `{}`).
   */
  run(context: CommandContext<S>, args: NoInfer<QapiValue<A>>): unknown;
}

/**
 * The builder of commands on state `S`: `commandFor<S>()(command)` checks
 * `command` with the type of `run`'s arguments inferred from `args`, and
 * returns it as a table holds it, for arguments of any schema: sound,
 * because {@linkcode runCommand} validates the arguments against `args`
 * before `run` sees them.
 */
export function commandFor<S>(): <A extends QmpArguments>(
  command: QmpCommand<S, A>,
) => QmpCommand<S> {
  return (command) => command as unknown as QmpCommand<S>;
}

/** Commands by name, in the order they were added. */
export class CommandTable<S> {
  readonly #commands = new Map<string, QmpCommand<S>>();

  /** A table of `commands`. */
  constructor(commands: Iterable<QmpCommand<S>> = []) {
    for (const command of commands) this.add(command);
  }

  /** Add `command`; a name can be added once. */
  add(command: QmpCommand<S>): this {
    if (this.#commands.has(command.name)) {
      throw new Error(`QMP command '${command.name}' defined twice`);
    }
    this.#commands.set(command.name, command);
    return this;
  }

  /** The command called `name`, if any. */
  get(name: string): QmpCommand<S> | undefined {
    return this.#commands.get(name);
  }

  /** Every command, in the order added. */
  [Symbol.iterator](): IterableIterator<QmpCommand<S>> {
    return this.#commands.values();
  }
}

/**
 * Validate `args` against `command`'s argument type (QEMU's messages) and
 * run it; resolves to its return value, `{}` when it returns nothing.
 */
export async function runCommand<S>(
  command: QmpCommand<S>,
  context: CommandContext<S>,
  args: JsonObject,
): Promise<unknown> {
  const validated = validateInput(command.args, args, "json");
  return (await command.run(context, validated)) ?? {};
}
