import { z } from 'zod';
import { parseMessageBody } from './config';

/** A work message names a window (or a verification slice), never carries rows. */
export const workMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('copy-window'), windowId: z.number().int().positive() }).strict(),
  z
    .object({
      type: z.literal('verify-slice'),
      runId: z.number().int().positive(),
      sliceId: z.number().int().positive(),
    })
    .strict(),
]);
export type WorkMessage = z.infer<typeof workMessageSchema>;

/** Parses a queue body; a malformed one gets InvalidMessageError (it will end in the DLQ). */
export function parseWorkMessage(body: string): WorkMessage {
  return parseMessageBody(workMessageSchema, body);
}
