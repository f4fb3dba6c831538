import Tensors

/// Decoding of ggml tensor data to fp32 for the types small Llama/Qwen GGUFs use.
///
/// Block layouts (little-endian, blocks of 32 values, never straddling rows):
/// - Q8_0, 34 bytes: fp16 scale d, 32 × int8 q;            x = d·q
/// - Q4_0, 18 bytes: fp16 d, 16 bytes of nibbles;          x = d·(q − 8)
/// - Q4_1, 20 bytes: fp16 d, fp16 min m, 16 bytes nibbles; x = d·q + m
/// In the 4-bit types byte j holds value j in its low nibble and value j + 16 in its high one.
/// The 5-bit types, IQ4_NL and the K-quants (super-blocks of 256) are in GGUFKQuants.swift.
package enum GGUFQuant {
    package static let supported: [GGMLType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl,
                                                .q2_K, .q3_K, .q4_K, .q5_K, .q6_K]

    package static func canDequantize(_ type: GGMLType) -> Bool { supported.contains(type) }

    /// Decodes `count` values of `type` from `src` into `dst`, split across `Threads.count`.
    /// `count` must be a whole number of blocks (GGUFFile checks this when it opens a file).
    package static func dequantize(_ type: GGMLType, from src: UnsafeRawPointer,
                                  to dst: UnsafeMutablePointer<Float>, count: Int) {
        precondition(canDequantize(type), "cannot dequantise \(type.name)")
        let blockSize = type.blockSize!, blockBytes = type.blockBytes!
        let kernel: (UnsafeRawPointer, UnsafeMutablePointer<Float>, Int) -> Void
        switch type {
        case .f32: kernel = { s, d, n in d.update(from: s.assumingMemoryBound(to: Float.self), count: n) }
        case .f16: kernel = { s, d, n in Half.convertFP16(s.assumingMemoryBound(to: UInt16.self), to: d, count: n) }
        case .bf16: kernel = { s, d, n in Half.convertBF16(s.assumingMemoryBound(to: UInt16.self), to: d, count: n) }
        case .q8_0: kernel = decodeQ8_0
        case .q4_0: kernel = { s, d, n in decodeQ4(s, d, blocks: n / 32, hasMin: false) }
        case .q4_1: kernel = { s, d, n in decodeQ4(s, d, blocks: n / 32, hasMin: true) }
        case .q5_0: kernel = { s, d, n in decodeQ5(s, d, blocks: n / 32, hasMin: false) }
        case .q5_1: kernel = { s, d, n in decodeQ5(s, d, blocks: n / 32, hasMin: true) }
        case .iq4_nl: kernel = { s, d, n in decodeIQ4_NL(s, d, blocks: n / 32) }
        case .q2_K: kernel = { s, d, n in decodeQ2_K(s, d, superBlocks: n / 256) }
        case .q3_K: kernel = { s, d, n in decodeQ3_K(s, d, superBlocks: n / 256) }
        case .q4_K: kernel = { s, d, n in decodeQ4_K(s, d, superBlocks: n / 256) }
        case .q5_K: kernel = { s, d, n in decodeQ5_K(s, d, superBlocks: n / 256) }
        case .q6_K: kernel = { s, d, n in decodeQ6_K(s, d, superBlocks: n / 256) }
        default: preconditionFailure("unreachable: \(type.name) is listed as supported")
        }
        // Chunks of whole blocks; small tensors (norms) stay on the calling thread.
        let blocks = count / blockSize
        let chunkBlocks = max(1, 16_384 / blockSize)
        let chunks = (blocks + chunkBlocks - 1) / chunkBlocks
        Threads.parallelFor(chunks) { range in
            let lo = range.lowerBound * chunkBlocks, hi = min(blocks, range.upperBound * chunkBlocks)
            kernel(src + lo * blockBytes, dst + lo * blockSize, (hi - lo) * blockSize)
        }
    }

    @inline(__always)
    static func fp16(_ p: UnsafeRawPointer) -> Float {
        Half.float(fromFP16: UInt16(littleEndian: p.loadUnaligned(as: UInt16.self)))
    }

    private static func decodeQ8_0(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ count: Int) {
        for b in 0..<count / 32 {
            let block = src + b * 34, out = dst + b * 32
            let d = fp16(block)
            let q = (block + 2).assumingMemoryBound(to: Int8.self)
            for i in 0..<32 { out[i] = d * Float(q[i]) }
        }
    }

    /// Q4_0 and Q4_1 differ only in the offset: Q4_0 centres codes at 8, Q4_1 adds a stored min.
    /// Both use ggml's exact operation order, so results match llama.cpp bit for bit.
    private static func decodeQ4(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>,
                                 blocks: Int, hasMin: Bool) {
        let blockBytes = hasMin ? 20 : 18
        for b in 0..<blocks {
            let block = src + b * blockBytes, out = dst + b * 32
            let d = fp16(block)
            let centre: Float = hasMin ? 0 : 8
            let m = hasMin ? fp16(block + 2) : 0
            let q = (block + (hasMin ? 4 : 2)).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                out[j] = d * (Float(q[j] & 0x0F) - centre) + m
                out[j + 16] = d * (Float(q[j] >> 4) - centre) + m
            }
        }
    }
}
