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
});
