import Cluster
import Foundation
import Formats
import Model
import Quant
import Tensors

/// `rqat bench sync`: what one RL weight sync costs: the policy a student sends its serving
/// ranks after each update (`PolicySync`), for a checkpoint fake-quantized at a scheme, against
/// the fp32 model's bytes. Under mpirun with 2 ranks, rank 0 also times the whole sync on the
/// link: encode, send, and on rank 1 decode and rebuild of the serving decoder, acknowledged.
package enum SyncBench {
    /// One way to send the policy.
    package struct Record: BenchRecord {
        package static let name = "sync"
        package var model: String
        package var scheme: String
        /// How the full-precision tensors travel (fp32, or bf16 for the embedding and LM head).
        package var embedding: String
        package var codec: String
        package var bytes: Int
        /// 4 bytes per parameter of the model.
        package var fp32Bytes: Int
        package var ratio: Double
        /// Bytes of the quantized matrices' frames (codes, scales, zeros) and of the rest, raw.
        package var quantizedRawBytes: Int
        package var otherRawBytes: Int
        /// Median seconds over the rounds: frames + message encoding; message decoding + snapshot;
        /// the serving decoder's weights from the snapshot; the whole sync over the link (2 ranks).
        package var encodeSeconds: Double
        package var decodeSeconds: Double
        package var rebuildSeconds: Double
        package var linkSeconds: Double?

        enum CodingKeys: String, CodingKey {
            case model, scheme, embedding, codec, bytes, ratio
            case fp32Bytes = "fp32_bytes", quantizedRawBytes = "quantized_raw_bytes", otherRawBytes = "other_raw_bytes"
            case encodeSeconds = "encode_s", decodeSeconds = "decode_s", rebuildSeconds = "rebuild_s", linkSeconds = "link_s"
        }
    }

    static let tag = 61

    package static func run(model path: String, scheme: QuantScheme, rounds: Int, world: Communicator,
                            log: (String) -> Void) throws -> [Record] {
        let checkpoint = try Checkpoint.open(path)
        let decoder = try TrainableDecoder(config: checkpoint.config, source: checkpoint.weights)
        let quantizer = try FakeQuantizer(decoder: decoder, scheme: scheme, mode: .ste)
        let quantized = quantizer.exportQuantized()
        var full: [String: Tensor] = [:]
        for p in decoder.parameters where quantized[p.name] == nil { full[p.name] = p.value }
        let snapshot = PolicySnapshot(version: 1, quantized: quantized, fullPrecision: full)
        let fp32Bytes = 4 * decoder.parameters.reduce(0) { $0 + $1.value.count }
        let wide = Set(full.keys.filter { full[$0]!.shape.count == 2 })   // embedding, a separate LM head
        var records: [Record] = []
        for (embedding, bf16) in [("fp32", Set<String>()), ("bf16", wide)] {
            for (codecName, codec) in [("raw", FrameCodec.raw), ("shuffled-zstd-3", FrameCodec.shuffledZstd(level: 3))] {
                var encode: [Double] = [], decode: [Double] = [], rebuild: [Double] = [], link: [Double] = []
                var bytes = 0
                for _ in 0..<rounds {
                    if world.rank == 0 {
                        var t = Date()
                        let message = TensorFrame.encodeMessage(PolicySync.frames(snapshot, bfloat16: bf16), codec: codec)
                        encode.append(Date().timeIntervalSince(t))
                        bytes = message.count
                        t = Date()
                        let received = try PolicySync.snapshot(from: try TensorFrame.decodeMessage(message, from: 0), scheme: scheme, rank: 0)
                        decode.append(Date().timeIntervalSince(t))
                        t = Date()
                        _ = try received.decoderWeights(config: checkpoint.config)
                        rebuild.append(Date().timeIntervalSince(t))
                        if world.size > 1 {
                            t = Date()
                            let again = TensorFrame.encodeMessage(PolicySync.frames(snapshot, bfloat16: bf16), codec: codec)
                            try world.send(again, to: 1, tag: tag)
                            _ = try world.receive(from: 1, tag: tag)
                            link.append(Date().timeIntervalSince(t))
                        }
                    } else if world.rank == 1 {
                        let message = try world.receive(from: 0, tag: tag)
                        let received = try PolicySync.snapshot(from: try TensorFrame.decodeMessage(message.bytes, from: 0), scheme: scheme, rank: 0)
                        _ = try received.decoderWeights(config: checkpoint.config)
                        try world.send([1], to: 0, tag: tag)
                    }
                }
                guard world.rank == 0 else { continue }
                let frames = PolicySync.frames(snapshot, bfloat16: bf16)
                let quantizedBytes = frames.filter { [42, 43, 44, 45].contains($0.kind) }.reduce(0) { $0 + $1.payload.count }
                let otherBytes = frames.filter { $0.kind == 46 }.reduce(0) { $0 + $1.payload.count }
                func median(_ x: [Double]) -> Double { x.sorted()[x.count / 2] }
                let r = Record(model: path, scheme: scheme.description, embedding: embedding, codec: codecName, bytes: bytes,
                               fp32Bytes: fp32Bytes, ratio: Double(bytes) / Double(fp32Bytes),
                               quantizedRawBytes: quantizedBytes, otherRawBytes: otherBytes,
                               encodeSeconds: median(encode), decodeSeconds: median(decode), rebuildSeconds: median(rebuild),
                               linkSeconds: link.isEmpty ? nil : median(link))
                records.append(r)
                log(String(format: "%@ %@, others %@, %@: %.1f MB = %.3f of fp32 (%.1f MB); encode %.2f s, decode %.2f s, rebuild %.2f s%@",
                           path, scheme.description, embedding, codecName, Double(bytes) / 1e6, r.ratio, Double(fp32Bytes) / 1e6,
                           r.encodeSeconds, r.decodeSeconds, r.rebuildSeconds,
                           r.linkSeconds.map { String(format: ", whole sync over the link %.2f s", $0) } ?? ""))
            }
        }
        return records
    }
}
