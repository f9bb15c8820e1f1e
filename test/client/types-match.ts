/**
 * Type-level check, compiled by tsc (the root typecheck and
 * test/client/types.test.ts): the frame, error-code and close-code types that
 * @pubgate/client carries (packages/client/src/protocol.ts) are the server's.
 * Not a test file itself: it holds no runtime code.
 */
import type { ErrorCode as ServerErrorCode } from '../../src/errors.js';
import type { CLOSE as ServerClose, CloseCode as ServerCloseCode } from '../../src/protocol/close-codes.js';
import type * as S from '../../src/protocol/frames.js';
import type * as C from '../../packages/client/src/protocol.js';

/** True when A and B are the same type (readonly and optional modifiers included). */
type Equals<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Assert<T extends true> = T;
type Frame<U, K> = Extract<U, { type: K }>;

export type FrameTypesMatch = [
  Assert<Equals<ServerErrorCode, C.ErrorCode>>,
  Assert<Equals<S.SinceOffset, C.SinceOffset>>,
  Assert<Equals<S.WelcomeFrame, C.WelcomeFrame>>,
  Assert<Equals<S.ReplyFrame, C.ReplyFrame>>,
  Assert<Equals<S.MessageFrame, C.MessageFrame>>,
  Assert<Equals<S.ServerFrame, C.ServerFrame>>,
  Assert<Equals<S.ClientFrameType, C.ClientFrameType>>,
  Assert<Equals<Frame<S.ClientFrame, 'subscribe'>, Frame<C.ClientFrame, 'subscribe'>>>,
  Assert<Equals<Frame<S.ClientFrame, 'unsubscribe'>, Frame<C.ClientFrame, 'unsubscribe'>>>,
  Assert<Equals<Frame<S.ClientFrame, 'refresh'>, Frame<C.ClientFrame, 'refresh'>>>,
  // Presence and join/leave (1.1): the reply's members/users/connections/truncated are in ReplyFrame above.
  Assert<Equals<Frame<S.ClientFrame, 'presence'>, Frame<C.ClientFrame, 'presence'>>>,
  Assert<Equals<Frame<S.ClientFrame, 'presence_stats'>, Frame<C.ClientFrame, 'presence_stats'>>>,
  Assert<Equals<S.JoinFrame, C.JoinFrame>>,
  Assert<Equals<S.LeaveFrame, C.LeaveFrame>>,
  // Server-side subscriptions (1.1): welcome `subs` is in WelcomeFrame above, the subscribe `token` in the subscribe frame.
  Assert<Equals<S.SubscribedFrame, C.SubscribedFrame>>,
  Assert<Equals<S.UnsubscribedFrame, C.UnsubscribedFrame>>,
  Assert<Equals<NonNullable<S.WelcomeFrame['subs']>, NonNullable<C.WelcomeFrame['subs']>>>,
  // publish: on the wire `data` is any JSON value; the server keeps its raw JSON text after parsing.
  Assert<Equals<Omit<Frame<S.ClientFrame, 'publish'>, 'data'>, Omit<Frame<C.ClientFrame, 'publish'>, 'data'>>>,
  Assert<Equals<Frame<S.ClientFrame, 'publish'>['data'], string>>,
  Assert<Equals<Frame<C.ClientFrame, 'publish'>['data'], unknown>>,
  // ping: the id may be left out on the wire; the parsed frame has `id: number | undefined`.
  Assert<Frame<S.ClientFrame, 'ping'> extends Frame<C.ClientFrame, 'ping'> ? true : false>,
  Assert<Equals<Required<Frame<C.ClientFrame, 'ping'>>['id'], number>>,
  Assert<Equals<ServerCloseCode, C.CloseCode>>,
  Assert<Equals<typeof ServerClose, typeof C.CLOSE>>,
];

// The check can fail: a type that differs in one field is caught.
// @ts-expect-error WelcomeFrame without `ping` is not the server's WelcomeFrame
export type MismatchIsCaught = Assert<Equals<S.WelcomeFrame, Omit<C.WelcomeFrame, 'ping'>>>;
