import Foundation
import Tensors

/// Why codes cannot be packed or packed buffers cannot be read; one line.
package struct GPTQPackingError: UserFacingError, Equatable {
    package let message: String
    package init(_ message: String) { self.message = message }
    package var description: String { message }
}

/// A `QuantizedMatrix` in the tensors of a GPTQ checkpoint. For a layer with `rows` output and
/// `cols` input features, `groups` groups and `bits`:
///
///     qweight  I32 [cols * bits / 32, rows]   codes packed along the INPUT dimension
///     qzeros   I32 [groups, rows * bits / 32] (zero - offset) mod 2^bits packed along the OUTPUT
///                                             dimension; the offset is the format's (`GPTQCheckpointFormat`)
///     scales   F16 [groups, rows]
///     g_idx    I32 [cols]                     group of each input column
///
/// Packing (every width): the codes of one line, in order, form a little-endian bit stream with
/// code i at bits [bits*i, bits*(i+1)); word k holds stream bits [32k, 32k+32). For 2/4/8 bits
/// that puts 32/bits whole codes in each word (code i at bit (i % (32/bits)) * bits of word
/// i / (32/bits)); for 3 bits every 32 codes fill 3 words and codes 10 and 21 straddle word
/// boundaries, exactly AutoGPTQ's `pack` loop. Lines must hold a multiple of 32 codes (GPTQ's
/// shapes are `in // 32 * bits`), so cols and rows must be multiples of 32. See docs/FORMATS.md.
package struct GPTQPackedMatrix: Equatable, Sendable {
    package let rows: Int
    package let cols: Int
    package let bits: Int
    package let groups: Int
    /// [cols * bits / 32, rows], row-major.
    package var qweight: [Int32]
    /// [groups, rows * bits / 32].
    package var qzeros: [Int32]
    /// [groups, rows], fp16-representable values.
    package var scales: [Float]
    /// [cols].
    package var gIdx: [Int32]

    package init(rows: Int, cols: Int, bits: Int, groups: Int,
                qweight: [Int32], qzeros: [Int32], scales: [Float], gIdx: [Int32]) {
        self.rows = rows
        self.cols = cols
        self.bits = bits
        self.groups = groups
        self.qweight = qweight
        self.qzeros = qzeros
        self.scales = scales
        self.gIdx = gIdx
    }

    package var qweightShape: [Int] { [cols * bits / 32, rows] }
    package var qzerosShape: [Int] { [groups, rows * bits / 32] }
    package var scalesShape: [Int] { [groups, rows] }
    package var gIdxShape: [Int] { [cols] }
}

/// How a GPTQ checkpoint stores its zero points: the `format` / `checkpoint_format` value of its
/// quantization_config. The qweight, scales and g_idx layouts are the same in both.
package enum GPTQCheckpointFormat: String, Sendable, CaseIterable {
    /// Classic GPTQ ("v1", AutoGPTQ's): qzeros hold (zero - 1) mod 2^bits, an artefact of the
    /// original CUDA kernels, which add the 1 back.
    case v1 = "gptq"
    /// GPTQModel's "gptq_v2": qzeros hold the zeros themselves.
    case v2 = "gptq_v2"

    /// Subtracted from each zero before packing (and added back, mod 2^bits, when reading).
    package var zeroOffset: Int { self == .v1 ? 1 : 0 }

    /// What `QuantizedCheckpoint.save` writes. Symmetric grids stay v1, the layout every GPTQ
    /// loader reads (v2 is GPTQModel's own); their zero 2^(bits-1) never wraps.
    /// Asymmetric grids are v2: GPTQModel refuses an asymmetric v1 file unless its own quantizer
    /// wrote it, because at 2, 4 and 8 bits it converts v1 to v2 by adding 1 to whole packed words
    /// (the inverse of its own writer's subtraction), which carries into the next zero wherever a
    /// zero of 0 was stored per field as 2^bits - 1 (as AutoGPTQ and rqat store it). v2 it reads
    /// as stored. The loader lines that decide this: docs/FORMATS.md.
    package static func written(symmetric: Bool) -> Self { symmetric ? .v1 : .v2 }
}

package enum GPTQPacking {
    /// The zero offset of GPTQ's classic ("v1") checkpoints, the default of the packing functions.
    package static let v1ZeroOffset = GPTQCheckpointFormat.v1.zeroOffset

    static func checkBits(_ bits: Int) throws {
        guard QuantScheme.supportedWeightBits.contains(bits) else {
            throw GPTQPackingError("unsupported bits \(bits) (GPTQ packing supports 2, 3, 4, 8)")
        }
    }

    static func checkLine(_ count: Int, _ what: String) throws {
        guard count % 32 == 0 else {
            throw GPTQPackingError("\(what) \(count) is not a multiple of 32, which GPTQ's packed shapes (n // 32 * bits) need")
        }
    }

    /// Packs `count` codes (a multiple of 32) into count*bits/32 words at `dst` (zeroed first).
    @inline(__always)
    static func packLine(_ src: UnsafePointer<UInt32>, count: Int, bits: Int, into dst: UnsafeMutablePointer<UInt32>) {
        let words = count * bits / 32
        dst.update(repeating: 0, count: words)
        let mask = UInt32((1 << bits) - 1)
        for i in 0..<count {
            let c = src[i] & mask
            let bit = bits * i, w = bit >> 5, off = UInt32(bit & 31)
            dst[w] |= c << off
            if Int(off) + bits > 32 { dst[w + 1] |= c >> (32 - off) }
        }
    }

    /// The inverse of `packLine`.
    @inline(__always)
    static func unpackLine(_ src: UnsafePointer<UInt32>, count: Int, bits: Int, into dst: UnsafeMutablePointer<UInt32>) {
        let mask = UInt32((1 << bits) - 1)
        for i in 0..<count {
            let bit = bits * i, w = bit >> 5, off = UInt32(bit & 31)
            var v = src[w] >> off
            if Int(off) + bits > 32 { v |= src[w + 1] << (32 - off) }
            dst[i] = v & mask
        }
    }

    /// qweight [cols*bits/32, rows] from row-major codes (rows, cols).
    package static func packWeights(codes: [UInt8], rows: Int, cols: Int, bits: Int) throws -> [Int32] {
        try checkBits(bits)
        try checkLine(cols, "input features (cols)")
        guard codes.count == rows * cols else { throw GPTQPackingError("\(codes.count) codes for a \(rows)x\(cols) matrix") }
        let words = cols * bits / 32
        var out = [Int32](repeating: 0, count: words * rows)
        codes.withUnsafeBufferPointer { codes in
        out.withUnsafeMutableBufferPointer { out in
            let c = codes.baseAddress!, o = UnsafeMutableRawPointer(out.baseAddress!).assumingMemoryBound(to: UInt32.self)
            Threads.parallelFor(rows) { range in
                let line = UnsafeMutablePointer<UInt32>.allocate(capacity: max(cols, 1))
                let packed = UnsafeMutablePointer<UInt32>.allocate(capacity: max(words, 1))
                defer { line.deallocate(); packed.deallocate() }
                for r in range {
                    for j in 0..<cols { line[j] = UInt32(c[r * cols + j]) }
                    packLine(line, count: cols, bits: bits, into: packed)
                    for w in 0..<words { o[w * rows + r] = packed[w] }
                }
            }
        }}
        return out
    }

    /// Row-major codes (rows, cols) from qweight [cols*bits/32, rows].
    package static func unpackWeights(_ qweight: [Int32], rows: Int, cols: Int, bits: Int) throws -> [UInt8] {
        try checkBits(bits)
        try checkLine(cols, "input features (cols)")
        let words = cols * bits / 32
        guard qweight.count == words * rows else {
            throw GPTQPackingError("qweight has \(qweight.count) words, a \(rows)x\(cols) \(bits)-bit matrix needs [\(words), \(rows)]")
        }
        var codes = [UInt8](repeating: 0, count: rows * cols)
        qweight.withUnsafeBufferPointer { q in
        codes.withUnsafeMutableBufferPointer { codes in
            let src = UnsafeRawPointer(q.baseAddress!).assumingMemoryBound(to: UInt32.self), c = codes.baseAddress!
            Threads.parallelFor(rows) { range in
                let line = UnsafeMutablePointer<UInt32>.allocate(capacity: max(cols, 1))
                let packed = UnsafeMutablePointer<UInt32>.allocate(capacity: max(words, 1))
                defer { line.deallocate(); packed.deallocate() }
                for r in range {
                    for w in 0..<words { packed[w] = src[w * rows + r] }
                    unpackLine(packed, count: cols, bits: bits, into: line)
                    for j in 0..<cols { c[r * cols + j] = UInt8(truncatingIfNeeded: line[j]) }
                }
            }
        }}
        return codes
    }

    /// qzeros [groups, rows*bits/32]: (zero - offset) mod 2^bits per output channel, packed along
    /// the output dimension. Zeros must be integers in 0...2^bits-1.
    package static func packZeros(_ zeros: [Float], groups: Int, rows: Int, bits: Int,
                                 offset: Int = v1ZeroOffset) throws -> [Int32] {
        try checkBits(bits)
        try checkLine(rows, "output features (rows)")
        guard zeros.count == groups * rows else { throw GPTQPackingError("\(zeros.count) zeros for [\(groups), \(rows)]") }
        let maxCode = (1 << bits) - 1
        var line = [UInt32](repeating: 0, count: rows)
        let words = rows * bits / 32
        var out = [Int32](repeating: 0, count: groups * words)
        var packed = [UInt32](repeating: 0, count: words)
        for g in 0..<groups {
            for r in 0..<rows {
                let z = zeros[g * rows + r]
                guard z == z.rounded(), z >= 0, z <= Float(maxCode) else {
                    throw GPTQPackingError("zero \(z) (group \(g), row \(r)) is not an integer in 0...\(maxCode)")
                }
                line[r] = UInt32((Int(z) - offset) & maxCode)
            }
            line.withUnsafeBufferPointer { l in
                packed.withUnsafeMutableBufferPointer { packLine(l.baseAddress!, count: rows, bits: bits, into: $0.baseAddress!) }
            }
            for w in 0..<words { out[g * words + w] = Int32(bitPattern: packed[w]) }
        }
        return out
    }

    /// Zeros [groups, rows] from qzeros: ((stored + offset) mod 2^bits).
    package static func unpackZeros(_ qzeros: [Int32], groups: Int, rows: Int, bits: Int,
                                   offset: Int = v1ZeroOffset) throws -> [Float] {
        try checkBits(bits)
        try checkLine(rows, "output features (rows)")
        let words = rows * bits / 32
        guard qzeros.count == groups * words else {
            throw GPTQPackingError("qzeros has \(qzeros.count) words, [\(groups), \(words)] needed")
        }
        let maxCode = (1 << bits) - 1
        var zeros = [Float](repeating: 0, count: groups * rows)
        var line = [UInt32](repeating: 0, count: rows)
        qzeros.withUnsafeBufferPointer { q in
            let src = UnsafeRawPointer(q.baseAddress!).assumingMemoryBound(to: UInt32.self)
            for g in 0..<groups {
                line.withUnsafeMutableBufferPointer { unpackLine(src + g * words, count: rows, bits: bits, into: $0.baseAddress!) }
                for r in 0..<rows { zeros[g * rows + r] = Float((Int(line[r]) + offset) & maxCode) }
            }
        }
        return zeros
    }

    /// The GPTQ tensors of a matrix. Scales must already be fp16 values (they are when the
    /// matrix comes from `RTN` or a quantizer using `QuantGrid.roundedToFP16`).
    package static func pack(_ m: QuantizedMatrix, format: GPTQCheckpointFormat = .v1) throws -> GPTQPackedMatrix {
        for (i, s) in m.scales.enumerated() where Float(Float16(s)) != s {
            throw GPTQPackingError("scale \(s) (group \(i / max(m.rows, 1)), row \(i % max(m.rows, 1))) is not an fp16 value; round grids with QuantGrid.roundedToFP16 before computing codes")
        }
        return GPTQPackedMatrix(
            rows: m.rows, cols: m.cols, bits: m.bits, groups: m.groupCount,
            qweight: try packWeights(codes: m.codes, rows: m.rows, cols: m.cols, bits: m.bits),
            qzeros: try packZeros(m.zeros, groups: m.groupCount, rows: m.rows, bits: m.bits, offset: format.zeroOffset),
            scales: m.scales, gIdx: m.gIdx)
    }

    /// The matrix of GPTQ tensors, every size and g_idx entry checked.
    package static func unpack(_ p: GPTQPackedMatrix, groupSize: Int?, symmetric: Bool,
                              format: GPTQCheckpointFormat = .v1) throws -> QuantizedMatrix {
        try checkBits(p.bits)
        let groups = QuantizedMatrix.groupCount(cols: p.cols, groupSize: groupSize)
        guard p.groups == groups else {
            throw GPTQPackingError("\(p.groups) groups, but \(p.cols) input features at group size \(groupSize.map(String.init) ?? "-1") make \(groups)")
        }
        guard p.scales.count == groups * p.rows else {
            throw GPTQPackingError("scales has \(p.scales.count) values, [\(groups), \(p.rows)] needed")
        }
        guard p.gIdx.count == p.cols else {
            throw GPTQPackingError("g_idx has \(p.gIdx.count) entries for \(p.cols) input features")
        }
        if let bad = p.gIdx.firstIndex(where: { $0 < 0 || Int($0) >= groups }) {
            throw GPTQPackingError("g_idx[\(bad)] = \(p.gIdx[bad]) is not a group in 0..<\(groups)")
        }
        if let bad = p.scales.firstIndex(where: { !$0.isFinite }) {
            throw GPTQPackingError("scales[\(bad)] is \(p.scales[bad])")
        }
        let codes = try unpackWeights(p.qweight, rows: p.rows, cols: p.cols, bits: p.bits)
        let zeros = try unpackZeros(p.qzeros, groups: groups, rows: p.rows, bits: p.bits, offset: format.zeroOffset)
        return QuantizedMatrix(rows: p.rows, cols: p.cols, bits: p.bits, groupSize: groupSize, symmetric: symmetric,
                               codes: codes, scales: p.scales, zeros: zeros, gIdx: p.gIdx)
    }
}
