/**
 * Events the daemon emits (BLOCK_EXPORT_DELETED, ...), with the time they
 * happened, delivered to every subscriber (each QMP monitor subscribes once
 * capabilities are negotiated).
 *
 * @example
 * ```ts
 * import { EventBus } from "./event-bus.ts";
 * const bus = new EventBus();
 * const unsubscribe = bus.subscribe((event) => console.log(event.name));
 * bus.emit("BLOCK_EXPORT_DELETED", { id: "export0" });
 * unsubscribe();
 * ```
 * @module
 */

/** An event as it happened. */
export interface DaemonEvent {
  /** The event's name, e.g. "BLOCK_EXPORT_DELETED". */
  readonly name: string;
  /** Its data (QMP's "data" member). */
  readonly data: Readonly<Record<string, unknown>>;
  /** When it happened: seconds and microseconds since the epoch, as QMP reports. */
  readonly timestamp: { readonly seconds: number; readonly microseconds: number };
}

/** Receives events. */
export type EventListener = (event: DaemonEvent) => void;

/** Delivers each emitted event to every current subscriber, in order. */
export class EventBus {
  readonly #listeners = new Set<EventListener>();

  /** Receive every event emitted from now on; returns the function that stops it. */
  subscribe(listener: EventListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Emit event `name` with `data`, timestamped now. */
  emit(name: string, data: Readonly<Record<string, unknown>>): void {
    const micros = Math.round((performance.timeOrigin + performance.now()) * 1000);
    const event: DaemonEvent = {
      name,
      data,
      timestamp: { seconds: Math.floor(micros / 1e6), microseconds: micros % 1e6 },
    };
    for (const listener of [...this.#listeners]) listener(event);
  }
}
