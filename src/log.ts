/**
 * One-line diagnostics on standard error, prefixed with the program name.
 * Debug lines appear only when verbose output was asked for (-v).
 *
 * @example
 * ```ts
 * import { Logger } from "./log.ts";
 * const log = new Logger({ verbose: true });
 * log.debug("client connected");
 * ```
 * @module
 */

const encoder = new TextEncoder();

/** Writes diagnostics to standard error. */
export class Logger {
  /** Whether debug lines are printed. */
  readonly verbose: boolean;
  readonly #prefix: string;

  /** A logger; `prefix` is prepended to every line ("denbd" by default). */
  constructor(options: { verbose?: boolean; prefix?: string } = {}) {
    this.verbose = Boolean(options.verbose);
    this.#prefix = options.prefix ?? "denbd";
  }

  /** A logger whose lines also name `context` (e.g. a client address). */
  child(context: string): Logger {
    return new Logger({ verbose: this.verbose, prefix: `${this.#prefix}: ${context}` });
  }

  /** Detail that helps debugging; shown with -v only. */
  debug(message: string): void {
    if (this.verbose) this.#write(message);
  }

  /** Something an operator should know about. */
  info(message: string): void {
    this.#write(message);
  }

  /** Something went wrong but the program carries on. */
  warn(message: string): void {
    this.#write(message);
  }

  #write(message: string): void {
    try {
      Deno.stderr.writeSync(encoder.encode(`${this.#prefix}: ${message}\n`));
    } catch {
      // Standard error is gone (closed pipe): there is nowhere left to report to.
    }
  }
}
