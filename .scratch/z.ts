import { z } from 'zod';
const s = z.object({ a: z.coerce.number().int().min(1).default(5).describe('the a'), b: z.boolean().default(false).describe('flag b'), c: z.string().optional().describe('c text'), d: z.string().transform(s=>s).pipe(z.enum(['X','Y'])).optional().describe('phase') }).strict();
for (const [k, v] of Object.entries(s.shape)) {
  let t: any = v; const desc = (v as any).description; let def: unknown;
  while (t instanceof z.ZodDefault || t instanceof z.ZodOptional) { if (t instanceof z.ZodDefault) def = t._zod.def.defaultValue; t = t.unwrap(); }
  console.log(k, desc, def, t.constructor.name, t instanceof z.ZodBoolean);
}
