import Foundation
import Model
import Tensors

/// Generation on teacher ranks: prompts with sampling parameters and per-prompt seeds go out;
/// completions come back as token ids with their log-probabilities (traces for KD, rollouts
/// for RL).
struct GenerationMessage {
    static func requestFrames(id: Int, _ requests: [GenerationRequest], vocab: Int) -> [TensorFrame] {
        let maxNew = requests.map(\.maxNewTokens)
        let prompts = requests.flatMap(\.prompt)
        var sampling: [Float] = [], seeds: [Int] = [], topK: [Int] = []
        for r in requests {
            sampling += [r.sampling.temperature, r.sampling.topP]
            topK.append(r.sampling.topK)
            seeds += [Int(r.sampling.seed >> 32), Int(r.sampling.seed & 0xFFFF_FFFF)]
        }
        return [
            TensorFrame(kind: FrameKind.generateHeader, ints: [id, requests.count], as: .int32, shape: [2]),
            TensorFrame(kind: FrameKind.lengths, ints: requests.map(\.prompt.count) + maxNew + topK, as: .int32, shape: [3, requests.count]),
            TensorFrame(kind: FrameKind.tokens, ints: prompts, as: .tokenIds(vocabSize: vocab), shape: [prompts.count]),
            TensorFrame(kind: FrameKind.sampling, floats: sampling, as: .float32, shape: [requests.count, 2]),
            TensorFrame(kind: FrameKind.seeds, ints: seeds.map { Int(Int32(bitPattern: UInt32($0))) }, as: .int32, shape: [requests.count, 2]),
        ]
    }

    static func requests(from list: [TensorFrame], rank: Int) throws -> (id: Int, requests: [GenerationRequest]) {
        let frames = try FrameSet(list, from: rank, what: "generation request")
        let header = try frames.ints(FrameKind.generateHeader, count: 2)
        let n = header[1]
        let lengths = try frames.ints(FrameKind.lengths, count: 3 * n)
        let tokens = try frames.ints(FrameKind.tokens, count: lengths[0..<n].reduce(0, +))
        let sampling = try frames.floatFrame(FrameKind.sampling).floats()
        let seeds = try frames.ints(FrameKind.seeds, count: 2 * n).map { UInt64(UInt32(truncatingIfNeeded: $0)) }
        guard sampling.count == 2 * n else { throw ClusterError("generation request from rank \(rank): \(sampling.count / 2) sampling settings for \(n) prompts") }
        var requests: [GenerationRequest] = []
        var offset = 0
        for i in 0..<n {
            let params = SamplingParams(temperature: sampling[2 * i], topP: sampling[2 * i + 1], topK: lengths[2 * n + i],
                                        seed: seeds[2 * i] << 32 | seeds[2 * i + 1])
            requests.append(GenerationRequest(prompt: Array(tokens[offset..<offset + lengths[i]]), maxNewTokens: lengths[n + i], sampling: params))
            offset += lengths[i]
        }
        return (header[0], requests)
    }

    /// `version`: the policy that made them (RL serving), sent in a frame of its own.
    static func responseFrames(id: Int, _ results: [GenerationResult], vocab: Int, version: Int? = nil) -> [TensorFrame] {
        let tokens = results.flatMap(\.tokens)
        return (version.map { [TensorFrame(kind: FrameKind.policyVersion, ints: [$0], as: .int32, shape: [1])] } ?? []) + [
            TensorFrame(kind: FrameKind.generateHeader, ints: [id, results.count], as: .int32, shape: [2]),
            TensorFrame(kind: FrameKind.lengths, ints: results.map(\.tokens.count), as: .int32, shape: [results.count]),
            TensorFrame(kind: FrameKind.tokens, ints: tokens, as: .tokenIds(vocabSize: vocab), shape: [tokens.count]),
            TensorFrame(kind: FrameKind.logProbs, floats: results.flatMap(\.logprobs), as: .float32, shape: [tokens.count]),
            TensorFrame(kind: FrameKind.finish, ints: results.map { $0.finish == .eos ? 1 : 0 }, as: .uint8, shape: [results.count]),
        ]
    }

    /// The policy version of a response (nil when the teacher made it).
    static func version(of list: [TensorFrame]) -> Int? {
        list.first { $0.kind == FrameKind.policyVersion }.map { Int($0.ints()[0]) }
    }

    static func results(from list: [TensorFrame], id: Int, count n: Int, rank: Int) throws -> [GenerationResult] {
        let frames = try FrameSet(list.filter { $0.kind != FrameKind.policyVersion }, from: rank, what: "generation response")
        let header = try frames.ints(FrameKind.generateHeader, count: 2)
        guard header == [id, n] else { throw ClusterError("teacher rank \(rank) answered generation \(header[0]) (\(header[1]) prompts) where \(id) (\(n)) was expected") }
        let lengths = try frames.ints(FrameKind.lengths, count: n)
        let tokens = try frames.ints(FrameKind.tokens, count: lengths.reduce(0, +))
        let logprobs = try frames.floatFrame(FrameKind.logProbs).floats()
        let finish = try frames.intFrame(FrameKind.finish).ints()
        guard logprobs.count == tokens.count, finish.count == n else { throw ClusterError("generation response from rank \(rank) is inconsistent") }
        var results: [GenerationResult] = []
        var offset = 0
        for i in 0..<n {
            let range = offset..<offset + lengths[i]
            results.append(GenerationResult(tokens: Array(tokens[range]), logprobs: Array(logprobs[range]),
                                            finish: finish[i] == 1 ? .eos : .length))
            offset += lengths[i]
        }
        return results
    }
}

extension TeacherService {
    /// Bytes of a generation request in, bytes of the completions out.
    package func respond(toGenerateRequest bytes: [UInt8], from rank: Int) throws -> [UInt8] {
        let start = Date()
        let (id, requests) = try GenerationMessage.requests(from: try TensorFrame.decodeMessage(bytes, from: rank), rank: rank)
        let results = Generator(decoder: policy?.decoder ?? decoder, stopTokens: stopTokens).generate(requests)
        let response = TensorFrame.encodeMessage(GenerationMessage.responseFrames(id: id, results, vocab: vocab, version: policy?.version),
                                                 codec: options.codec)
        busySeconds += Date().timeIntervalSince(start)
        tokensProcessed += results.reduce(0) { $0 + $1.tokens.count }
        return response
    }
}

/// Generation spread over teacher ranks: the prompts are cut into one contiguous share per
/// teacher, sent at once, and the completions gathered back in prompt order.
package func generateOnTeachers(_ requests: [GenerationRequest], world: Communicator, teacherRanks: [Int],
                               vocab: Int, codec: FrameCodec) throws -> [GenerationResult] {
    try sendGenerationRequests(requests, world: world, teacherRanks: teacherRanks, vocab: vocab, codec: codec).receive().results
}

/// Generation requests sent to teacher ranks, one contiguous share each, not yet answered.
struct PendingGeneration {
    let world: Communicator
    let teacherRanks: [Int]
    let shares: [Range<Int>]
    let sends: [Request]

    /// Waits for every share's completions: in prompt order, with the policy version of each
    /// share's teacher.
    func receive() throws -> (results: [GenerationResult], versions: [Int?]) {
        var results: [GenerationResult] = [], versions: [Int?] = []
        for (t, share) in shares.enumerated() where !share.isEmpty {
            let message = try world.receive(from: teacherRanks[t], tag: Tag.generateResponse)
            let frames = try TensorFrame.decodeMessage(message.bytes, from: teacherRanks[t])
            versions.append(GenerationMessage.version(of: frames))
            results += try GenerationMessage.results(from: frames, id: t, count: share.count, rank: teacherRanks[t])
        }
        for s in sends { try s.wait() }
        return (results, versions)
    }
}

/// Sends each teacher rank its share of `requests` without waiting for the answers.
func sendGenerationRequests(_ requests: [GenerationRequest], world: Communicator, teacherRanks: [Int],
                            vocab: Int, codec: FrameCodec) throws -> PendingGeneration {
    let shares = teacherRanks.indices.map { t in
        requests.count * t / teacherRanks.count..<requests.count * (t + 1) / teacherRanks.count
    }
    var sends: [Request] = []
    for (t, share) in shares.enumerated() where !share.isEmpty {
        let frames = GenerationMessage.requestFrames(id: t, Array(requests[share]), vocab: vocab)
        sends.append(try world.sendNonBlocking(TensorFrame.encodeMessage(frames, codec: codec), to: teacherRanks[t], tag: Tag.generateRequest))
    }
    return PendingGeneration(world: world, teacherRanks: teacherRanks, shares: shares, sends: sends)
}

/// Generation by a teacher in this process, through the same bytes as `generateOnTeachers`.
package func generateLocally(_ requests: [GenerationRequest], service: TeacherService, codec: FrameCodec = .shuffledZstd(level: 3)) throws -> [GenerationResult] {
    let request = TensorFrame.encodeMessage(GenerationMessage.requestFrames(id: 0, requests, vocab: service.vocab), codec: codec)
    let response = try service.respond(toGenerateRequest: request, from: 0)
    return try GenerationMessage.results(from: try TensorFrame.decodeMessage(response, from: 0), id: 0, count: requests.count, rank: 0)
}

/// Tells teacher ranks this client is finished; each teacher stops once all its clients have.
package func releaseTeachers(world: Communicator, teacherRanks: [Int]) throws {
    for teacher in teacherRanks { try world.send([], to: teacher, tag: Tag.done) }
}
