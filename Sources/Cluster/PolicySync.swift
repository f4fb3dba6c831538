import Foundation
import Formats
import Model
import Tensors

/// The weights a policy samples with, as a serving rank receives them after each update: every
/// quantized matrix in its packed low-bit form (codes at `bits` bits, fp16 scales, zero points,
/// act-order group index when permuted), every other tensor (embedding, norms, a separate LM
/// head) in fp32 or, where asked, bf16. With fp32 for the others the serving rank's decoder
/// computes exactly what the student's fake-quant forward does; bf16 trades that for bytes.
package struct PolicySnapshot: Equatable {
    package var version: Int
    package var quantized: [String: QuantizedMatrix]
    package var fullPrecision: [String: Tensor]

    package init(version: Int, quantized: [String: QuantizedMatrix], fullPrecision: [String: Tensor]) {
        self.version = version
        self.quantized = quantized
        self.fullPrecision = fullPrecision
    }

    package static func == (a: PolicySnapshot, b: PolicySnapshot) -> Bool {
        a.version == b.version && a.quantized == b.quantized && a.fullPrecision.keys.sorted() == b.fullPrecision.keys.sorted()
            && a.fullPrecision.allSatisfy { name, t in t.shape == b.fullPrecision[name]!.shape && t.array == b.fullPrecision[name]!.array }
    }

    /// The decoder's weights: quantized matrices dequantized (scale x (code - zero), as the
    /// fake-quant forward computes them), the rest as received.
    package func decoderWeights(config: ModelConfig) throws -> DecoderWeights {
        var tensors = fullPrecision
        for (name, matrix) in quantized { tensors[name] = matrix.dequantized() }
        return try DecoderWeights(config: config, source: InMemoryWeights(tensors, path: "policy version \(version)"))
    }
}

/// `PolicySnapshot` <-> frames (docs/WIRE.md has the frame layout conventions).
///
/// Frames, in order: a header (int32: version, quantized count, full-precision count), the
/// names (UTF-8, newline-separated, quantized first, each list sorted), then per quantized
/// matrix its codes (packed), scales (fp16), zeros (fp16: integers up to 255 are exact) and
/// group index (int32; an empty frame when sequential), then per other tensor its values.
package enum PolicySync {
    static let header: UInt16 = 40, names: UInt16 = 41, codes: UInt16 = 42, scales: UInt16 = 43
    static let zeros: UInt16 = 44, groupIndex: UInt16 = 45, tensor: UInt16 = 46

    /// `bfloat16`: full-precision tensors sent in bf16 (e.g. a tied embedding); the rest fp32.
    package static func frames(_ s: PolicySnapshot, bfloat16: Set<String> = []) -> [TensorFrame] {
        let q = s.quantized.keys.sorted(), f = s.fullPrecision.keys.sorted()
        var frames = [
            TensorFrame(kind: header, ints: [s.version, q.count, f.count], as: .int32, shape: [3]),
            TensorFrame(kind: names, codes: Array((q + f).joined(separator: "\n").utf8), bits: 8,
                        shape: [(q + f).joined(separator: "\n").utf8.count]),
        ]
        for name in q {
            let m = s.quantized[name]!
            frames.append(TensorFrame(kind: codes, codes: m.codes, bits: m.bits, shape: [m.rows, m.cols]))
            frames.append(TensorFrame(kind: scales, floats: m.scales, as: .float16, shape: [m.groupCount, m.rows]))
            frames.append(TensorFrame(kind: zeros, floats: m.zeros, as: .float16, shape: [m.groupCount, m.rows]))
            frames.append(m.hasPermutedGroups
                ? TensorFrame(kind: groupIndex, ints: m.gIdx, as: .int32, shape: [m.cols])
                : TensorFrame(kind: groupIndex, ints: [Int32](), as: .int32, shape: [0]))
        }
        for name in f {
            frames.append(TensorFrame(kind: tensor, tensor: s.fullPrecision[name]!, as: bfloat16.contains(name) ? .bfloat16 : .float32))
        }
        return frames
    }

    /// The snapshot a message from `rank` carries; `scheme` gives the matrices' group size and
    /// symmetry (the same on every rank: all parse one command line; nil for a policy without
    /// quantized matrices).
    package static func snapshot(from frames: [TensorFrame], scheme: QuantScheme?, rank: Int) throws -> PolicySnapshot {
        func bad(_ problem: String) -> ClusterError { ClusterError("policy sync from rank \(rank): \(problem)") }
        guard frames.count >= 2, frames[0].kind == header, frames[1].kind == names, frames[0].count == 3 else {
            throw bad("no header; both sides must run the same rqat")
        }
        let h = frames[0].ints().map(Int.init)
        let list = String(decoding: frames[1].codes(), as: UTF8.self).split(separator: "\n").map(String.init)
        guard h[1] >= 0, h[2] >= 0, list.count == h[1] + h[2], frames.count == 2 + 4 * h[1] + h[2] else {
            throw bad("\(frames.count) frames for \(h[1]) quantized and \(h[2]) other tensors")
        }
        var quantized: [String: QuantizedMatrix] = [:], full: [String: Tensor] = [:]
        for (i, name) in list.prefix(h[1]).enumerated() {
            guard let scheme, let bits = scheme.weightBits else {
                throw bad("quantized matrix \(name) for a policy without a weight scheme; pass the same --qat to every rank")
            }
            let c = frames[2 + 4 * i], s = frames[3 + 4 * i], z = frames[4 + 4 * i], g = frames[5 + 4 * i]
            guard c.kind == codes, s.kind == scales, z.kind == zeros, g.kind == groupIndex, c.shape.count == 2,
                  c.dtype == .packed(bits: bits) else { throw bad("matrix \(name) is not codes, scales, zeros, group index at \(bits) bits") }
            let (rows, cols) = (c.shape[0], c.shape[1])
            let groups = QuantizedMatrix.groupCount(cols: cols, groupSize: scheme.groupSize)
            guard s.count == groups * rows, z.count == groups * rows, g.count == 0 || g.count == cols else {
                throw bad("matrix \(name): grids of \(s.count) for \(groups) groups x \(rows) rows")
            }
            quantized[name] = QuantizedMatrix(rows: rows, cols: cols, bits: bits, groupSize: scheme.groupSize, symmetric: scheme.symmetric,
                                              codes: c.codes(), scales: s.floats(), zeros: z.floats(), gIdx: g.count == 0 ? nil : g.ints())
        }
        for (i, name) in list.dropFirst(h[1]).enumerated() {
            let frame = frames[2 + 4 * h[1] + i]
            guard frame.kind == tensor, frame.dtype.isFloatingPoint else { throw bad("tensor \(name) is not a float frame") }
            full[name] = frame.tensor()
        }
        return PolicySnapshot(version: h[0], quantized: quantized, fullPrecision: full)
    }
}
