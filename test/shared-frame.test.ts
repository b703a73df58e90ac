import t from 'tap'
import * as ws from 'ws'
import { SharedFrame } from '../lib/shared-frame.js'

// ws's own framing, the reference the hand-built header must match byte for byte (a named
// export of ws's ESM wrapper, a static of its CommonJS class; untyped in @types/ws).
type FrameBuilder = { frame (data: Buffer, options: { fin: boolean, opcode: number, mask: boolean, readOnly: boolean, rsv1: boolean }): Buffer[] }
const Sender = ((ws as unknown as { Sender?: FrameBuilder }).Sender ?? (ws.default as unknown as { Sender: FrameBuilder }).Sender)

t.test('a shared frame is exactly the text frame ws would build, at every length class', async (t) => {
  for (const text of ['', 'x'.repeat(125), 'x'.repeat(126), 'x'.repeat(65_535), 'x'.repeat(65_536), 'x'.repeat(70_000), 'é€😀'.repeat(5000)]) {
    const payload = Buffer.from(text)
    const expected = Buffer.concat(Sender.frame(payload, { fin: true, opcode: 1, mask: false, readOnly: true, rsv1: false }))
    const frame = new SharedFrame(text)
    t.ok(frame.bytes.equals(expected), `${payload.length} bytes`)
    t.ok(frame.payload.equals(payload), `payload view of ${payload.length} bytes`)
  }
})
