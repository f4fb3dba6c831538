/// The GGUF block types llama.cpp's quantizer writes into Q2_K ... Q6_K files and their `_M`/`_S`
/// mixes: the 5-bit blocks and IQ4_NL (blocks of 32) and the K-quants (super-blocks of 256 values
/// in sub-blocks of 16 or 32, each with its own small integer scale under one fp16 scale).
///
/// Every kernel evaluates the same float expression in the same order as ggml's
/// `dequantize_row_*` (and gguf-py's `quants.dequantize`): a scale product is rounded to fp32
/// first, then the code is multiplied and any min subtracted, so results match llama.cpp bit for
/// bit. Layouts, byte offsets within one block:
///
/// - Q5_0 (22): fp16 d, u32 qh, 16 nibble bytes;                 x = d·(q − 16)
/// - Q5_1 (24): fp16 d, fp16 m, u32 qh, 16 nibble bytes;         x = d·q + m
///   (q = nibble | bit i of qh << 4, value i < 16 in the low nibble of byte i, i ≥ 16 in the high)
/// - IQ4_NL (18): fp16 d, 16 nibble bytes;                        x = d·table[nibble]
/// - Q2_K (84): 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit codes,
///   fp16 d, fp16 dmin;                                           x = (d·sc)·q − dmin·m
/// - Q3_K (110): 32 bytes high-bit mask, 64 bytes of 2-bit codes, 12 bytes of 6-bit scales,
///   fp16 d;                                                      x = (d·(sc − 32))·(q − 4·!hbit)
/// - Q4_K (144): fp16 d, fp16 dmin, 12 bytes of 6-bit scales and mins, 128 nibble bytes;
///                                                                x = (d·sc)·q − dmin·m
/// - Q5_K (176): as Q4_K with 32 bytes of high bits before the nibbles
/// - Q6_K (210): 128 low-nibble bytes, 64 bytes of 2-bit high parts, 16 int8 scales, fp16 d;
///                                                                x = (d·sc)·(q − 32)
extension GGUFQuant {
    /// IQ4_NL's non-uniform 4-bit grid (denser near zero, where weights are).
    static let iq4NLValues: [Int8] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]

    /// Q5_0 and Q5_1, like Q4_0/Q4_1, differ only in the offset: centre 16 or a stored min.
    static func decodeQ5(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>,
                         blocks: Int, hasMin: Bool) {
        let blockBytes = hasMin ? 24 : 22
        let centre: Int32 = hasMin ? 0 : 16
        for b in 0..<blocks {
            let block = src + b * blockBytes, out = dst + b * 32
            let d = fp16(block)
            let m: Float = hasMin ? fp16(block + 2) : 0
            let highBits = UInt32(littleEndian: (block + (hasMin ? 4 : 2)).loadUnaligned(as: UInt32.self))
            let q = (block + (hasMin ? 8 : 6)).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                let lo = Int32(q[j] & 0x0F) | Int32((highBits >> UInt32(j)) & 1) << 4
                let hi = Int32(q[j] >> 4) | Int32((highBits >> UInt32(j + 16)) & 1) << 4
                // No `+ 0` for Q5_0: it would turn ggml's −0 into +0.
                if hasMin {
                    out[j] = Float(lo) * d + m
                    out[j + 16] = Float(hi) * d + m
                } else {
                    out[j] = Float(lo - centre) * d
                    out[j + 16] = Float(hi - centre) * d
                }
            }
        }
    }

    static func decodeIQ4_NL(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, blocks: Int) {
        iq4NLValues.withUnsafeBufferPointer { grid in
            for b in 0..<blocks {
                let block = src + b * 18, out = dst + b * 32
                let d = fp16(block)
                let q = (block + 2).assumingMemoryBound(to: UInt8.self)
                for j in 0..<16 {
                    out[j] = d * Float(grid[Int(q[j] & 0x0F)])
                    out[j + 16] = d * Float(grid[Int(q[j] >> 4)])
                }
            }
        }
    }

    /// 16 sub-blocks of 16 values. Codes are packed four to a byte: within each half of 128
    /// values, bit pair s of byte l holds value 32·s + l (bytes 0–31 cover l = 0–31).
    static func decodeQ2_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, superBlocks: Int) {
        for b in 0..<superBlocks {
            let block = (src + b * 84).assumingMemoryBound(to: UInt8.self)
            let scales = block, codes = block + 16
            let d = fp16(block + 80), dmin = fp16(block + 82)
            var out = dst + b * 256
            var sub = 0
            for half in 0..<2 {
                let q = codes + 32 * half
                for pair in 0..<4 {
                    let shift = UInt8(2 * pair)
                    for part in 0..<2 {
                        let sc = scales[sub]
                        sub += 1
                        let dl = d * Float(sc & 0x0F), ml = dmin * Float(sc >> 4)
                        let qp = q + 16 * part
                        for l in 0..<16 { out[l] = dl * Float((qp[l] >> shift) & 3) - ml }
                        out += 16
                    }
                }
            }
        }
    }

    /// Q3_K's 16 six-bit scales: the low nibbles in bytes 0–7 (scales 0–7 low nibble, 8–15 high
    /// nibble), the top two bits in bytes 8–11 (scale i uses bits 2·(i/4) of byte 8 + i%4).
    @inline(__always)
    private static func q3KScale(_ packed: UnsafePointer<UInt8>, _ i: Int) -> Int32 {
        let low = i < 8 ? packed[i] & 0x0F : packed[i - 8] >> 4
        let high = (packed[8 + i % 4] >> UInt8(2 * (i / 4))) & 3
        return Int32(low | high << 4) - 32
    }

    /// Codes as Q2_K's, plus a third bit: bit (4·half + pair) of mask byte l (l < 32) belongs to the
    /// value whose 2-bit code sits in that pair of code byte l of that half; a clear bit means − 4.
    static func decodeQ3_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, superBlocks: Int) {
        for b in 0..<superBlocks {
            let block = (src + b * 110).assumingMemoryBound(to: UInt8.self)
            let mask = block, codes = block + 32, packedScales = block + 96
            let d = fp16(block + 108)
            var out = dst + b * 256
            var sub = 0
            for half in 0..<2 {
                let q = codes + 32 * half
                for pair in 0..<4 {
                    let shift = UInt8(2 * pair)
                    let bit = UInt8(1) << UInt8(4 * half + pair)
                    for part in 0..<2 {
                        let dl = d * Float(q3KScale(packedScales, sub))
                        sub += 1
                        let qp = q + 16 * part, mp = mask + 16 * part
                        for l in 0..<16 {
                            let code = Int32((qp[l] >> shift) & 3) - (mp[l] & bit != 0 ? 0 : 4)
                            out[l] = dl * Float(code)
                        }
                        out += 16
                    }
                }
            }
        }
    }

    /// Q4_K/Q5_K's eight 6-bit (scale, min) pairs in 12 bytes: pairs 0–3 are the low six bits of
    /// bytes 0–3 (scales) and 4–7 (mins); pairs 4–7 take their low nibbles from bytes 8–11 and
    /// their top two bits from the spare top bits of bytes 0–7.
    @inline(__always)
    private static func kScaleMin(_ packed: UnsafePointer<UInt8>, _ j: Int) -> (scale: UInt8, min: UInt8) {
        if j < 4 { return (packed[j] & 63, packed[j + 4] & 63) }
        return ((packed[j + 4] & 0x0F) | (packed[j - 4] >> 6) << 4,
                (packed[j + 4] >> 4) | (packed[j] >> 6) << 4)
    }

    /// Four groups of 64 values, each from 32 code bytes: low nibbles are sub-block 2g, high
    /// nibbles sub-block 2g + 1.
    static func decodeQ4_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, superBlocks: Int) {
        for b in 0..<superBlocks {
            let block = (src + b * 144).assumingMemoryBound(to: UInt8.self)
            let d = fp16(block), dmin = fp16(block + 2)
            let packed = block + 4
            let out = dst + b * 256
            for g in 0..<4 {
                let q = block + 16 + 32 * g, y = out + 64 * g
                let (s1, m1) = kScaleMin(packed, 2 * g), (s2, m2) = kScaleMin(packed, 2 * g + 1)
                let d1 = d * Float(s1), min1 = dmin * Float(m1)
                let d2 = d * Float(s2), min2 = dmin * Float(m2)
                for l in 0..<32 { y[l] = d1 * Float(q[l] & 0x0F) - min1 }
                for l in 0..<32 { y[32 + l] = d2 * Float(q[l] >> 4) - min2 }
            }
        }
    }

    /// Q4_K plus a fifth bit: value l of sub-block s (l < 32) takes bit s of high-bit byte l.
    static func decodeQ5_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, superBlocks: Int) {
        for b in 0..<superBlocks {
            let block = (src + b * 176).assumingMemoryBound(to: UInt8.self)
            let d = fp16(block), dmin = fp16(block + 2)
            let packed = block + 4, highBits = block + 16
            let out = dst + b * 256
            for g in 0..<4 {
                let q = block + 48 + 32 * g, y = out + 64 * g
                let (s1, m1) = kScaleMin(packed, 2 * g), (s2, m2) = kScaleMin(packed, 2 * g + 1)
                let d1 = d * Float(s1), min1 = dmin * Float(m1)
                let d2 = d * Float(s2), min2 = dmin * Float(m2)
                let bit1 = UInt8(1) << UInt8(2 * g), bit2 = UInt8(2) << UInt8(2 * g)
                for l in 0..<32 {
                    let code = (q[l] & 0x0F) | (highBits[l] & bit1 != 0 ? 16 : 0)
                    y[l] = d1 * Float(code) - min1
                }
                for l in 0..<32 {
                    let code = (q[l] >> 4) | (highBits[l] & bit2 != 0 ? 16 : 0)
                    y[32 + l] = d2 * Float(code) - min2
                }
            }
        }
    }

    /// Two halves of 128 values, each from 64 low-nibble bytes, 32 high-part bytes and 8 scales
    /// (one per 16 values). Value 32·k + l of a half (k < 4, l < 32): low nibble of byte l
    /// (k = 0), of byte l + 32 (k = 1), high nibbles of the same (k = 2, 3); its top two bits
    /// are bit pair k of high byte l.
    static func decodeQ6_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, superBlocks: Int) {
        for b in 0..<superBlocks {
            let block = (src + b * 210).assumingMemoryBound(to: UInt8.self)
            let d = fp16(block + 208)
            let allScales = UnsafeRawPointer(block + 192).assumingMemoryBound(to: Int8.self)
            for half in 0..<2 {
                let low = block + 64 * half, high = block + 128 + 32 * half
                let scales = allScales + 8 * half
                let y = dst + b * 256 + 128 * half
                for l in 0..<32 {
                    let s = l / 16, h = high[l]
                    let q1 = Int32((low[l] & 0x0F) | (h & 3) << 4) - 32
                    let q2 = Int32((low[l + 32] & 0x0F) | ((h >> 2) & 3) << 4) - 32
                    let q3 = Int32((low[l] >> 4) | ((h >> 4) & 3) << 4) - 32
                    let q4 = Int32((low[l + 32] >> 4) | ((h >> 6) & 3) << 4) - 32
                    y[l] = d * Float(scales[s]) * Float(q1)
                    y[l + 32] = d * Float(scales[s + 2]) * Float(q2)
                    y[l + 64] = d * Float(scales[s + 4]) * Float(q3)
                    y[l + 96] = d * Float(scales[s + 6]) * Float(q4)
                }
            }
        }
    }
}
