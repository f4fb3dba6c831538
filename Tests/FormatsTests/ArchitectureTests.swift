import Foundation
@testable import Formats
import TestSupport
import XCTest

final class ArchitectureTests: XCTestCase {
    func config(_ family: ModelConfig.Family, bias: Bool = false, tied: Bool = true) -> ModelConfig {
        ModelConfig(modelType: family, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 2, numAttentionHeads: 4,
                    numKeyValueHeads: 2, headDim: 8, vocabSize: 50, rmsNormEps: 1e-6, ropeTheta: 10_000,
                    maxPositionEmbeddings: 128, tieWordEmbeddings: tied, attentionBias: bias)
    }

    /// Every tensor name survives Hugging Face -> GGUF -> Hugging Face, and names parse back to
    /// their role and block.
    func testNamesRoundTripThroughEveryDialect() throws {
        let architecture = DecoderArchitecture(config(.qwen2, bias: true, tied: false))
        var gguf = Set<String>()
        for spec in architecture.tensors {
            let (role, layer) = try XCTUnwrap(DecoderArchitecture.role(ofName: spec.name), spec.name)
            XCTAssertEqual(role, spec.role)
            XCTAssertEqual(layer, spec.layer)
            let g = try XCTUnwrap(DecoderArchitecture.ggufName(forName: spec.name), spec.name)
            XCTAssertEqual(DecoderArchitecture.name(forGGUF: g), spec.name)
            gguf.insert(g)
        }
        XCTAssertEqual(gguf.count, architecture.tensors.count, "two tensors share a GGUF name")
        XCTAssertTrue(gguf.contains("blk.1.attn_q.bias"))
        XCTAssertTrue(gguf.contains("output.weight"))
        XCTAssertNil(DecoderArchitecture.name(forGGUF: "rope_freqs.weight"))
        XCTAssertNil(DecoderArchitecture.role(ofName: "model.layers.x.mlp.up_proj.weight"))
        let w = DecoderArchitecture.name(.down, layer: 3)
        XCTAssertEqual(DecoderArchitecture.weightName(ofPacked: DecoderArchitecture.packedName(.qzeros, ofWeight: w), part: .qzeros), w)
    }

    /// Biases and q/k norms exist only where the family has them; a tied head is not a tensor;
    /// the stacked sites cover their parts' rows without a gap.
    func testTensorsFollowTheConfig() {
        let llama = DecoderArchitecture(config(.llama))
        XCTAssertFalse(llama.tensors.contains { $0.role == .qBias || $0.role == .qNorm || $0.role == .lmHead })
        XCTAssertEqual(llama.tensors.count, 1 + 2 * 9 + 1)
        let qwen3 = DecoderArchitecture(config(.qwen3, tied: false))
        XCTAssertEqual(qwen3.tensors.filter { $0.role == .qNorm }.map(\.shape), [[8], [8]])
        XCTAssertEqual(qwen3.tensors.last?.role, .lmHead)
        let rows = qwen3.stackedRows(.qkv)
        XCTAssertEqual(rows.map(\.role), [.q, .k, .v])
        XCTAssertEqual(rows.map(\.rowStart), [0, 32, 48])
        XCTAssertEqual(qwen3.stackedRows(.gateUp).map(\.rows), [64, 64])
    }

    /// The weight layout is written once: no Hugging Face or llama.cpp tensor name appears as a
    /// string literal in Sources/ outside Formats/Architecture.swift.
    func testTensorNamesAreSpelledOnlyInTheArchitecture() throws {
        let patterns = ["model.layers", "embed_tokens", "_proj", "layernorm", "lm_head", "model.norm", "q_norm", "k_norm",
                        "blk.", "token_embd", "attn_q", "attn_k", "attn_v", "attn_output", "attn_norm", "ffn_", "output_norm"]
        let sources = TestPaths.root.appendingPathComponent("Sources")
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)!
            .compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" && $0.lastPathComponent != "Architecture.swift" }
        XCTAssertGreaterThan(files.count, 20)
        let literal = try Regex(#""(?:[^"\\]|\\.)*""#)
        var found: [String] = []
        for file in files {
            let lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            for (i, line) in lines.enumerated() {
                let code = line.trimmingCharacters(in: .whitespaces)
                if code.hasPrefix("//") { continue }
                for match in line.matches(of: literal) {
                    let text = String(line[match.range])
                    if let p = patterns.first(where: { text.contains($0) }) {
                        found.append("\(file.path.dropFirst(sources.path.count + 1)):\(i + 1) \(text) (\(p))")
                    }
                }
            }
        }
        XCTAssertEqual(found, [], "tensor names belong in Sources/Formats/Architecture.swift")
    }
}
