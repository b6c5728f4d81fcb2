/** Stops the run's PostgreSQL server, whether the tests passed or not. */
export default async function globalTeardown(): Promise<void> {
  await globalThis.__LOCAL_PG__?.stop();
}
