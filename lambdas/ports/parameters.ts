/**
 * The parameter port: the runtime switches the backend reads (SSM Parameter Store on AWS,
 * an in-memory store locally). Names are full names (`<prefix>/v2-traffic-percentage`).
 */
export interface ParameterPort {
  /** The current value, or undefined when the parameter does not exist. */
  get(name: string): Promise<string | undefined>;
  /** Creates or overwrites the parameter. */
  put(name: string, value: string): Promise<void>;
}

/** Parameter names under a prefix, defined once. */
export const parameterNames = (prefix: string) => ({
  trafficPercentage: `${prefix}/v2-traffic-percentage`,
  dualWrite: `${prefix}/dual-write`,
  writePrimary: `${prefix}/write-primary`,
});

/** Which side the backend writes first: V1 until the write switch, then V2. */
export type WritePrimary = 'v1' | 'v2';
/** The values of `<prefix>/write-primary`. */
export const WRITE_PRIMARIES = ['v1', 'v2'] as const satisfies readonly WritePrimary[];
