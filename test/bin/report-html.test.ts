import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { renderHtml, type RehearsalReport } from '../../bin/rehearsal/report';

const CHROMIUM = '/usr/bin/chromium';

/** A run rolled back at 25 %: the cutover failed after its gate at 25 % found an alarm. */
const t = (s: number) => new Date(Date.UTC(2026, 11, 2, 4, 0, s)).toISOString();
const report: RehearsalReport = {
  ok: false,
  outcome: 'ROLLED_BACK',
  startedAt: t(0),
  finishedAt: t(60),
  source: 'embedded',
  phases: [
    { phase: 'PREPARE', status: 'done', startedAt: t(0), finishedAt: t(5), seconds: 5 },
    { phase: 'BACKFILL', status: 'done', startedAt: t(5), finishedAt: t(20), seconds: 15 },
    { phase: 'VERIFY', status: 'done', startedAt: t(20), finishedAt: t(25), seconds: 5 },
    { phase: 'CUTOVER', status: 'failed', startedAt: t(25), finishedAt: t(45), seconds: 20 },
    { phase: 'WRITE_SWITCH', status: 'pending', startedAt: '', seconds: null },
    { phase: 'CLEANUP', status: 'pending', startedAt: '', seconds: null },
  ],
  trafficPercentage: 0,
  verification: { clean: true, mismatchedWindows: 0, runId: 1 },
  tables: { users: { v1: 3, v2: 3, v1Checksum: 'a', v2Checksum: 'a' } },
  throughput: { backfillRowsPerSecond: 1000, samples: [] },
  checklist: [],
  faults: { failAt: 'cutover:25', killedWorkers: 0 },
  interruptions: [],
  traffic: [
    { at: t(26), percentage: 10, why: 'cutover step', gate: { at: t(30), healthy: true, reason: null } },
    {
      at: t(32),
      percentage: 25,
      why: 'cutover step',
      gate: { at: t(36), healthy: false, reason: 'alarm:RehearsalFault' },
    },
    { at: t(40), percentage: 0, why: 'rollback: alarm:RehearsalFault' },
  ],
  throttlePeriods: [],
};

describe('the HTML report: phase outcomes and traffic steps', () => {
  it('colours bars by outcome and lists each traffic step with its gate (static HTML)', () => {
    const html = renderHtml(report);
    expect(html).toMatch(/data-phase="CUTOVER" data-status="failed"[^>]*fill="#c0392b"/);
    expect(html).toMatch(/data-phase="BACKFILL" data-status="done"[^>]*fill="#4f8f4f"/);
    expect(html).toContain('traffic to V2 25 % (cutover step) · gate: UNHEALTHY (alarm:RehearsalFault)');
  });

  it('shades the throttle periods on the throughput chart, where they fell in the backfill', () => {
    // The backfill ran from t(5) to t(20): 15 s of samples; paused from t(8) to t(11), and
    // held back by V1 pressure from t(17) to its end.
    const html = renderHtml({
      ...report,
      throughput: {
        backfillRowsPerSecond: 1000,
        samples: [0, 5, 10, 15].map((s) => ({ t: s, rowsPerSecond: 1000, rows: s * 1000 })),
      },
      throttlePeriods: [
        { state: 'paused', cause: 'paused by cli:ops: <maintenance>', startedAt: t(8), endedAt: t(11) },
        { state: 'pressure', cause: 'V1 commit latency 9 ms', startedAt: t(17), endedAt: null },
      ],
    });
    const bands = [
      ...html.matchAll(/<rect class="throttle" data-state="(\w+)" x="([\d.]+)" y="20" width="([\d.]+)"/g),
    ];
    // x = 50 + t / 15 × 730 (the chart's 800 px less its margins).
    const at = (s: number) => 50 + (s / 15) * 730;
    expect(bands.map((b) => [b[1], Number(b[2]), Number(b[3])])).toEqual([
      ['paused', expect.closeTo(at(3), 0), expect.closeTo(at(6) - at(3), 0)],
      ['pressure', expect.closeTo(at(12), 0), expect.closeTo(at(15) - at(12), 0)],
    ]);
    expect(html).toContain('<title>paused: paused by cli:ops: &#60;maintenance&#62;</title>');
  });

  const browserTest = existsSync(CHROMIUM) ? it : it.skip;
  if (!existsSync(CHROMIUM)) {
    console.warn(
      `${CHROMIUM} is missing: the HTML report rendering test is skipped (CI installs it in .ci/run)`,
    );
  }
  browserTest(
    'renders them in headless Chromium: a red failed phase, the steps, a healthy and an unhealthy gate',
    async () => {
      let browser: Browser | undefined;
      try {
        browser = await chromium.launch({
          executablePath: CHROMIUM,
          args: ['--no-sandbox', '--disable-gpu'],
        });
        const page = await browser.newPage();
        await page.setContent(renderHtml(report));
        const bars = page.locator('#timeline rect.phase-bar');
        expect(await bars.count()).toBe(4);
        const fills = await bars.evaluateAll((els) =>
          els.map((e) => [
            e.getAttribute('data-phase'),
            (globalThis as unknown as { getComputedStyle(el: unknown): { fill: string } }).getComputedStyle(e)
              .fill,
          ]),
        );
        expect(fills).toEqual([
          ['PREPARE', 'rgb(79, 143, 79)'],
          ['BACKFILL', 'rgb(79, 143, 79)'],
          ['VERIFY', 'rgb(79, 143, 79)'],
          ['CUTOVER', 'rgb(192, 57, 43)'],
        ]);
        // The traffic lane sits under the phases, on the same axis: the 25 % step starts inside
        // the CUTOVER bar.
        const cutover = (await page.locator('rect[data-phase="CUTOVER"]').boundingBox())!;
        const steps = (await page.locator('#traffic polyline.traffic-steps').getAttribute('points'))!
          .trim()
          .split(/\s+/)
          .map((p) => p.split(',').map(Number));
        expect(steps.length).toBeGreaterThanOrEqual(8);
        const gates = page.locator('#traffic g.gate');
        expect(await gates.count()).toBe(2);
        expect(await page.locator('#traffic g.gate-healthy').getAttribute('data-level')).toBe('10');
        const bad = page.locator('#traffic g.gate-unhealthy');
        expect(await bad.getAttribute('data-level')).toBe('25');
        expect(await bad.locator('title').textContent()).toBe(
          'health gate at 25 %: unhealthy (alarm:RehearsalFault)',
        );
        const gateBox = (await bad.locator('circle').boundingBox())!;
        expect(gateBox.x).toBeGreaterThan(cutover.x);
        expect(gateBox.x).toBeLessThan(cutover.x + cutover.width);
        expect(gateBox.y).toBeGreaterThan(cutover.y + cutover.height);
        expect(await page.locator('#traffic-steps li').allTextContents()).toEqual([
          `${t(26)} · traffic to V2 10 % (cutover step) · gate: healthy`,
          `${t(32)} · traffic to V2 25 % (cutover step) · gate: UNHEALTHY (alarm:RehearsalFault)`,
          `${t(40)} · traffic to V2 0 % (rollback: alarm:RehearsalFault)`,
        ]);
        expect(await page.locator('.traffic-label').allTextContents()).toEqual(['10 %', '25 %', '0 %']);
      } finally {
        await browser?.close();
      }
    },
  );
});
