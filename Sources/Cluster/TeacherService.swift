import Formats
import Foundation
import Model
import Tensors
import Train

/// MPI tags of the messages between students and teachers.
enum Tag {
    static let signalRequest = 1
    static let signalResponse = 2
    static let generateRequest = 3
    static let generateResponse = 4
    /// RL: the policy generation requests are to be served from from now on (`PolicySync`).
    static let policySync = 5
    /// A student has finished; a teacher stops when every student has said so.
    static let done = 9
}

/// Frame kinds (the `kind` field of each frame of a message).
enum FrameKind {
    static let requestHeader: UInt16 = 1, tokens: UInt16 = 2, positions: UInt16 = 3
    static let responseHeader: UInt16 = 10, fullLogits: UInt16 = 11, topKIds: UInt16 = 12
    static let topKLogProbs: UInt16 = 13, tailMass: UInt16 = 14, sampledIds: UInt16 = 15, sampledCounts: UInt16 = 16
    static let generateHeader: UInt16 = 20, sampling: UInt16 = 21, seeds: UInt16 = 22, lengths: UInt16 = 23
    static let logProbs: UInt16 = 24, finish: UInt16 = 25, policyVersion: UInt16 = 26
}

/// What the teacher computes and how it is sent: the same on every rank (all ranks parse the
/// same command line).
package struct SignalOptions: Equatable, Sendable {
    package var encoding: SignalEncoding = .topK(64)
    /// KD temperature: top-k log-probabilities and draws are taken at it.
    package var temperature: Float = 1
    /// How top-k log-probabilities travel: float16 or bfloat16.
    package var logProbType: FrameDType = .float16
    /// How full logits travel: float32 or bfloat16.
    package var logitType: FrameDType = .float32
    package var codec: FrameCodec = .shuffledZstd(level: 3)
    /// Seeds the sampled encoding's draws.
    package var seed: UInt64 = 0

    package init() {}
}

// MARK: - Requests

/// "Give me your signal at these positions of these rows": one student micro-batch shard.
package struct SignalRequest: Equatable {
    /// The micro-batch's number in the run (the same on every student).
    package var batchId: Int
    package var rows: Int
    package var seqLen: Int
    /// Index of the first row within the whole micro-batch (so seeds do not depend on sharding).
    package var firstRow: Int
    package var tokens: [Int]           // (rows, seqLen)
    /// Flat indices (row * seqLen + t) of the positions trained on, ascending.
    package var positions: [Int]

    package init(batchId: Int, batch: SFTBatch) {
        self.batchId = batchId
        rows = batch.rows
        seqLen = batch.seqLen
        firstRow = batch.firstRow
        tokens = batch.tokens
        positions = batch.lossMask.indices.filter { batch.lossMask[$0] > 0 }
    }

    /// The seed of the sampled draws at the request's i-th trained position. It depends only on
    /// the run seed, the micro-batch and the position in the whole micro-batch, never on which
    /// rank or shard asked.
    package func drawSeed(runSeed: UInt64, position i: Int) -> UInt64 {
        SeededRNG.mix(runSeed, UInt64(batchId), UInt64(firstRow * seqLen + positions[i]))
    }

    package func frames(vocab: Int) -> [TensorFrame] {
        [TensorFrame(kind: FrameKind.requestHeader, ints: [batchId, rows, seqLen, firstRow], as: .int32, shape: [4]),
         TensorFrame(kind: FrameKind.tokens, ints: tokens, as: .tokenIds(vocabSize: vocab), shape: [rows, seqLen]),
         TensorFrame(kind: FrameKind.positions, ints: positions, as: .int32, shape: [positions.count])]
    }

    init(frames: [TensorFrame], from rank: Int) throws {
        let frames = try FrameSet(frames, from: rank, what: "signal request")
        let header = try frames.ints(FrameKind.requestHeader, count: 4)
        (batchId, rows, seqLen, firstRow) = (header[0], header[1], header[2], header[3])
        tokens = try frames.ints(FrameKind.tokens, count: rows * seqLen)
        positions = try frames.ints(FrameKind.positions, count: nil)
        guard positions.allSatisfy({ $0 >= 0 && $0 < rows * seqLen }) else {
            throw ClusterError("signal request from rank \(rank): a position is outside its \(rows) x \(seqLen) batch")
        }
    }
}

/// Frames of one message looked up by kind, with errors that name the sender.
struct FrameSet {
    let frames: [UInt16: TensorFrame]
    let rank: Int
    let what: String

    init(_ list: [TensorFrame], from rank: Int, what: String) throws {
        var byKind: [UInt16: TensorFrame] = [:]
        for f in list { byKind[f.kind] = f }
        frames = byKind
        self.rank = rank
        self.what = what
    }

    func frame(_ kind: UInt16) throws -> TensorFrame {
        guard let f = frames[kind] else { throw ClusterError("\(what) from rank \(rank) lacks frame kind \(kind) (mixed rqat versions?)") }
        return f
    }

    /// A frame of floats (fp32/fp16/bf16), checked before it is read.
    func floatFrame(_ kind: UInt16) throws -> TensorFrame {
        let f = try frame(kind)
        guard f.dtype.isFloatingPoint else { throw ClusterError("\(what) from rank \(rank): frame kind \(kind) holds \(f.dtype), expected floats") }
        return f
    }

    /// A frame of integers (int32/uint8/uint16/uint32), checked before it is read.
    func intFrame(_ kind: UInt16) throws -> TensorFrame {
        let f = try frame(kind)
        guard [.int32, .uint8, .uint16, .uint32].contains(f.dtype) else {
            throw ClusterError("\(what) from rank \(rank): frame kind \(kind) holds \(f.dtype), expected integers")
        }
        return f
    }

    func ints(_ kind: UInt16, count: Int?) throws -> [Int] {
        let values = try intFrame(kind).ints().map(Int.init)
        if let count, values.count != count {
            throw ClusterError("\(what) from rank \(rank): frame kind \(kind) has \(values.count) values, expected \(count)")
        }
        return values
    }
}

// MARK: - Responses

extension TeacherSignal {
    package func frames(batchId: Int, vocab: Int, options: SignalOptions) -> [TensorFrame] {
        var frames = [TensorFrame(kind: FrameKind.responseHeader, ints: [batchId, rows], as: .int32, shape: [2])]
        let idType = FrameDType.tokenIds(vocabSize: vocab)
        switch self {
        case .full(let logits, let v):
            frames.append(TensorFrame(kind: FrameKind.fullLogits, floats: logits, as: options.logitType, shape: [rows, v]))
        case .topK(let k, let ids, let logProbs, let tail):
            frames.append(TensorFrame(kind: FrameKind.topKIds, ints: ids, as: idType, shape: [rows, k]))
            frames.append(TensorFrame(kind: FrameKind.topKLogProbs, floats: logProbs, as: options.logProbType, shape: [rows, k]))
            frames.append(TensorFrame(kind: FrameKind.tailMass, floats: tail, as: .float32, shape: [rows]))
        case .sampled(let m, let ids, let counts):
            frames.append(TensorFrame(kind: FrameKind.sampledIds, ints: ids, as: idType, shape: [rows, m]))
            frames.append(TensorFrame(kind: FrameKind.sampledCounts, ints: counts.map(Int.init), as: .uint8, shape: [rows, m]))
        }
        return frames
    }

    /// The signal in a response message; checks it answers `batchId` with `rows` rows.
    package init(frames list: [TensorFrame], batchId: Int, rows: Int, vocab: Int, encoding: SignalEncoding, from rank: Int) throws {
        let frames = try FrameSet(list, from: rank, what: "teacher signal")
        let header = try frames.ints(FrameKind.responseHeader, count: 2)
        guard header[0] == batchId, header[1] == rows else {
            throw ClusterError("teacher rank \(rank) answered batch \(header[0]) (\(header[1]) rows) where batch \(batchId) (\(rows) rows) was expected")
        }
        switch encoding {
        case .full:
            let logits = try frames.floatFrame(FrameKind.fullLogits)
            guard logits.shape == [rows, vocab] else {
                throw ClusterError("teacher rank \(rank) sent logits of shape \(logits.shape); the student expects [\(rows), \(vocab)]: teacher and student vocabularies differ")
            }
            self = .full(logits: logits.floats(), vocab: vocab)
        case .topK(let k):
            let ids = try frames.intFrame(FrameKind.topKIds), lp = try frames.floatFrame(FrameKind.topKLogProbs)
            let tail = try frames.floatFrame(FrameKind.tailMass)
            guard ids.shape == [rows, k], lp.shape == [rows, k], tail.shape == [rows] else {
                throw ClusterError("teacher rank \(rank) sent top-k frames of shapes \(ids.shape), \(lp.shape), \(tail.shape); expected [\(rows), \(k)]")
            }
            let idValues = ids.ints()
            guard idValues.allSatisfy({ $0 >= 0 && Int($0) < vocab }) else {
                throw ClusterError("teacher rank \(rank) sent a token id outside the student's vocabulary of \(vocab): teacher and student vocabularies differ")
            }
            self = .topK(k: k, ids: idValues, logProbs: lp.floats(), tailMass: tail.floats())
        case .sampled(let m):
            let ids = try frames.intFrame(FrameKind.sampledIds), counts = try frames.intFrame(FrameKind.sampledCounts)
            guard ids.shape == [rows, m], counts.shape == [rows, m] else {
                throw ClusterError("teacher rank \(rank) sent sampled frames of shapes \(ids.shape), \(counts.shape); expected [\(rows), \(m)]")
            }
            let idValues = ids.ints()
            guard idValues.allSatisfy({ $0 >= 0 && Int($0) < vocab }) else {
                throw ClusterError("teacher rank \(rank) sent a token id outside the student's vocabulary of \(vocab): teacher and student vocabularies differ")
            }
            self = .sampled(draws: m, ids: idValues, counts: counts.ints().map { UInt8(clamping: $0) })
        }
    }
}

// MARK: - The teacher

/// The full-precision teacher: answers signal requests (logits of student batches, encoded) and
/// generation requests (completions with log-probabilities).
package final class TeacherService {
    package let decoder: Decoder
    package let options: SignalOptions
    package let stopTokens: Set<Int>
    /// Seconds spent computing and tokens processed, for throughput reports.
    package internal(set) var busySeconds: Double = 0
    package internal(set) var tokensProcessed = 0

    /// RL serving: the policy last received (`Tag.policySync`), which generation requests are
    /// then answered from instead of the teacher; its version goes back with the completions.
    package private(set) var policy: (version: Int, decoder: Decoder)?
    /// Whether policy messages are taken (RL serving), and the weight scheme they are decoded
    /// with (nil: a full-precision policy).
    package var acceptsPolicy = false
    package var policyScheme: QuantScheme?
    /// The online transforms of the init the policy trains from (QuaRot, FlatQuant), and its
    /// recorded activation quantization: the policy runs them as the students do.
    package var policyTransforms: OnlineTransforms?
    package var policyInitActivation: ActivationQuantSpec?
    package internal(set) var policyBytes = 0
    package internal(set) var policySeconds: Double = 0

    package init(decoder: Decoder, options: SignalOptions, stopTokens: Set<Int> = []) {
        self.decoder = decoder
        self.options = options
        self.stopTokens = stopTokens
    }

    /// Switches generation to the policy a `PolicySync` message carries.
    package func loadPolicy(_ bytes: [UInt8], from rank: Int) throws {
        guard acceptsPolicy else {
            throw ClusterError("serving rank received a policy from rank \(rank) but takes none; both must run rqat rl")
        }
        let start = Date()
        let snapshot = try PolicySync.snapshot(from: try TensorFrame.decodeMessage(bytes, from: rank), scheme: policyScheme, rank: rank)
        let weights = try snapshot.decoderWeights(config: decoder.config)
        // The policy's online transforms and activation and KV-cache quantization, as the students train it.
        try weights.installRunTimeTransforms(policyTransforms?.updating(from: snapshot.fullPrecision),
                                             activation: .training(policyScheme, from: policyInitActivation))
        policy = (snapshot.version, Decoder(weights: weights))
        policySeconds += Date().timeIntervalSince(start)
        policyBytes += bytes.count
    }

    package var vocab: Int { decoder.config.vocabSize }

    /// The signal at the requested positions.
    package func signal(for request: SignalRequest) -> TeacherSignal {
        let logits = logits(for: request)
        let seed = options.seed
        return TeacherSignal.make(logits: logits.ptr, rows: request.positions.count, vocab: vocab,
                                  encoding: options.encoding, temperature: options.temperature) { i in
            request.drawSeed(runSeed: seed, position: i)
        }
    }

    /// The teacher's logits at the requested positions, (M, V). Each row is its own sequence
    /// from position 0, as the student sees it; the LM head runs on those positions only.
    package func logits(for request: SignalRequest) -> Tensor {
        guard !request.positions.isEmpty else { return Tensor(shape: [0, vocab]) }
        let t = request.seqLen
        let cache = decoder.makeCache(capacities: Array(repeating: t, count: request.rows))
        let chunks = (0..<request.rows).map { SequenceChunk(sequence: $0, tokens: Array(request.tokens[$0 * t..<($0 + 1) * t])) }
        return decoder.forward(chunks, cache: cache, logitRows: request.positions)
    }

    /// Bytes of a signal request in, bytes of the response out (the wire form on both sides).
    /// Busy time counts decoding, the forward pass and encoding (compression is a real share of
    /// a teacher's work for full logits).
    package func respond(toSignalRequest bytes: [UInt8], from rank: Int) throws -> [UInt8] {
        let start = Date()
        let request = try SignalRequest(frames: try TensorFrame.decodeMessage(bytes, from: rank), from: rank)
        let signal = signal(for: request)
        let response = TensorFrame.encodeMessage(signal.frames(batchId: request.batchId, vocab: vocab, options: options),
                                                 codec: options.codec)
        busySeconds += Date().timeIntervalSince(start)
        tokensProcessed += request.tokens.count
        return response
    }

    /// Serves students until each of them has sent `done`. Responses go out with non-blocking
    /// sends so the teacher can compute the next request while a student has not yet asked
    /// for the previous answer.
    package func serve(world: Communicator, students: Int) throws {
        var pending: [Request] = []
        var finished = 0
        while finished < students {
            let message = try world.receive()
            switch message.tag {
            case Tag.signalRequest:
                let response = try respond(toSignalRequest: message.bytes, from: message.source)
                pending.append(try world.sendNonBlocking(response, to: message.source, tag: Tag.signalResponse))
            case Tag.generateRequest:
                let response = try respond(toGenerateRequest: message.bytes, from: message.source)
                pending.append(try world.sendNonBlocking(response, to: message.source, tag: Tag.generateResponse))
            case Tag.policySync:
                try loadPolicy(message.bytes, from: message.source)
            case Tag.done:
                finished += 1
            default:
                throw ClusterError("teacher rank \(world.rank): unexpected message tag \(message.tag) from rank \(message.source)")
            }
            pending = try pending.filter { try !$0.test() }
        }
        for request in pending { try request.wait() }
    }
}

extension SeededRNG {
    /// A seed from several numbers (splitmix64 finaliser over a running combination).
    package static func mix(_ values: UInt64...) -> UInt64 {
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15
        for v in values {
            h = (h ^ v) &* 0xBF58_476D_1CE4_E5B9
            h ^= h >> 31
            h = h &* 0x94D0_49BB_1331_11EB
            h ^= h >> 29
        }
        return h
    }
}

// MARK: - Links from a student to the teachers

/// The teacher in the same process: the same encode -> bytes -> decode path as over MPI, so a
/// single-process run trains on exactly what a distributed run would receive.
package final class LocalTeacherLink: TeacherLink {
    package let service: TeacherService
    private var queued: [Int: [UInt8]] = [:]
    package private(set) var waitSeconds: Double = 0
    package private(set) var bytesReceived = 0

    package init(service: TeacherService) { self.service = service }

    package func submit(_ batch: SFTBatch, id: Int) throws { try submit(SignalRequest(batchId: id, batch: batch)) }

    package func submit(_ request: SignalRequest) throws {
        queued[request.batchId] = TensorFrame.encodeMessage(request.frames(vocab: service.vocab), codec: service.options.codec)
    }

    package func signal(batchId: Int, rows: Int) throws -> TeacherSignal {
        guard let request = queued.removeValue(forKey: batchId) else { preconditionFailure("batch \(batchId) was never submitted") }
        let start = Date()
        let response = try service.respond(toSignalRequest: request, from: 0)
        waitSeconds += Date().timeIntervalSince(start)
        bytesReceived += response.count
        return try TeacherSignal(frames: try TensorFrame.decodeMessage(response, from: 0), batchId: batchId, rows: rows,
                                 vocab: service.vocab, encoding: service.options.encoding, from: 0)
    }

    package func close() {}
}

/// Teachers on other ranks. Batch b of student s goes to teacher (b * students + s) mod T, so
/// requests spread evenly; answers from one teacher arrive in the order it was asked.
package final class RemoteTeacherLink: TeacherLink {
    let world: Communicator
    let teacherRanks: [Int]
    let studentIndex: Int
    let studentCount: Int
    let vocab: Int
    let options: SignalOptions
    private var sends: [Request] = []
    private var assigned: [Int: Int] = [:]
    package private(set) var waitSeconds: Double = 0
    package private(set) var bytesReceived = 0

    package init(world: Communicator, teacherRanks: [Int], studentIndex: Int, studentCount: Int, vocab: Int, options: SignalOptions) {
        self.world = world
        self.teacherRanks = teacherRanks
        self.studentIndex = studentIndex
        self.studentCount = studentCount
        self.vocab = vocab
        self.options = options
    }

    package func submit(_ batch: SFTBatch, id: Int) throws { try submit(SignalRequest(batchId: id, batch: batch)) }

    package func submit(_ request: SignalRequest) throws {
        let teacher = teacherRanks[(request.batchId * studentCount + studentIndex) % teacherRanks.count]
        assigned[request.batchId] = teacher
        let bytes = TensorFrame.encodeMessage(request.frames(vocab: vocab), codec: options.codec)
        sends.append(try world.sendNonBlocking(bytes, to: teacher, tag: Tag.signalRequest))
        sends = try sends.filter { try !$0.test() }
    }

    package func signal(batchId: Int, rows: Int) throws -> TeacherSignal {
        guard let teacher = assigned.removeValue(forKey: batchId) else { preconditionFailure("batch \(batchId) was never submitted") }
        let start = MPI.time
        let message = try world.receive(from: teacher, tag: Tag.signalResponse)
        waitSeconds += MPI.time - start
        bytesReceived += message.bytes.count
        return try TeacherSignal(frames: try TensorFrame.decodeMessage(message.bytes, from: teacher), batchId: batchId,
                                 rows: rows, vocab: vocab, encoding: options.encoding, from: teacher)
    }

    package func close() throws {
        for request in sends { try request.wait() }
        sends = []
        try releaseTeachers(world: world, teacherRanks: teacherRanks)
    }
}
