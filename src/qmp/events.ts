/**
 * QMP events as they happen: each is declared in the schema (a
 * {@linkcode QapiEvent}: its name and data struct) and emitted with data of
 * the type derived from that struct, with the time it happened, to every
 * subscriber (each QMP monitor subscribes once capabilities are negotiated).
 *
 * @example
 * ```ts
 * import { EventBus } from "./events.ts";
 * import { BUILTIN, event, member, struct } from "./schema.ts";
 * const BLOCK_EXPORT_DELETED = event(
 *   "BLOCK_EXPORT_DELETED",
 *   struct("q_obj_BLOCK_EXPORT_DELETED-arg", [member("id", BUILTIN.str)]),
 * );
 * const bus = new EventBus<typeof BLOCK_EXPORT_DELETED>();
 * const unsubscribe = bus.subscribe((event) => console.log(event.name));
 * bus.emit(BLOCK_EXPORT_DELETED, { id: "export0" });
 * unsubscribe();
 * ```
 * @module
 */

import type { QapiEvent, QapiValue } from "./schema.ts";

/** An event as it happened. */
export interface QmpEvent {
  /** The event's name, e.g. "BLOCK_EXPORT_DELETED". */
  readonly name: string;
  /** Its data (QMP's "data" member), a value of the event's data struct. */
  readonly data: Readonly<Record<string, unknown>>;
  /** When it happened: seconds and microseconds since the epoch, as QMP reports. */
  readonly timestamp: { readonly seconds: number; readonly microseconds: number };
}

/** Receives events. */
export type EventListener = (event: QmpEvent) => void;

/**
 * Delivers each emitted event to every current subscriber, in order. `E`
 * is the events it may carry (their schemas), e.g. the daemon's table.
 */
export class EventBus<E extends QapiEvent = QapiEvent> {
  readonly #listeners = new Set<EventListener>();

  /** Receive every event emitted from now on; returns the function that stops it. */
  subscribe(listener: EventListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Emit `event` with `data` (a value of the event's data struct), timestamped now. */
  emit<T extends E>(event: T, data: NoInfer<QapiValue<T["data"]>>): void {
    const micros = Math.round((performance.timeOrigin + performance.now()) * 1000);
    const happened: QmpEvent = {
      name: event.name,
      data,
      timestamp: { seconds: Math.floor(micros / 1e6), microseconds: micros % 1e6 },
    };
    for (const listener of [...this.#listeners]) listener(happened);
  }
}
