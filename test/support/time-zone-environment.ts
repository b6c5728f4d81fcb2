import type { EnvironmentContext, JestEnvironmentConfig } from '@jest/environment';
import { TestEnvironment } from 'jest-environment-node';

/**
 * A jest environment whose suite runs in the Node time zone named by its
 * `@jest-environment-options {"timeZone": "…"}` docblock: the worker process's TZ is set for the
 * suite and put back after it (a test's own `process.env` is a copy, so setting TZ there would
 * change nothing). Every other suite runs in UTC (jest.config.js).
 */
export default class TimeZoneEnvironment extends TestEnvironment {
  private readonly timeZone: string;
  private saved: string | undefined;

  constructor(config: JestEnvironmentConfig, context: EnvironmentContext) {
    super(config, context);
    const timeZone = (config.projectConfig.testEnvironmentOptions as { timeZone?: unknown }).timeZone;
    if (typeof timeZone !== 'string' || timeZone === '')
      throw new Error(`${context.testPath}: @jest-environment-options must name a timeZone`);
    this.timeZone = timeZone;
  }

  override async setup(): Promise<void> {
    this.saved = process.env.TZ;
    process.env.TZ = this.timeZone;
    await super.setup();
  }

  override async teardown(): Promise<void> {
    if (this.saved === undefined) delete process.env.TZ;
    else process.env.TZ = this.saved;
    await super.teardown();
  }
}
