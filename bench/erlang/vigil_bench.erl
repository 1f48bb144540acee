%% Erlang/OTP reference benchmarks for the vigil benchmark suite.
%%
%% Run (see README.md):
%%   erl +S 2 +P 2000000 -noshell -pa bench/erlang \
%%       -s vigil_bench main <case> [key=value ...] -s init stop
%%
%% Each run prints exactly one JSON line on stdout:
%%   {"name":"<case>","impl":"erlang","value":<number>,"unit":"<unit>","params":{...}}
-module(vigil_bench).

-behaviour(supervisor).
%% Also the gen_server callback module of the restart worker (attribute
%% omitted only to avoid the init/1 "conflicting behaviours" warning).

-export([main/1]).
%% supervisor / gen_server callbacks and child start functions
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2,
         start_waiter/0, start_worker/0]).

-define(US(T), erlang:convert_time_unit(T, native, microsecond)).

%%====================================================================
%% Entry point
%%====================================================================

main([]) ->
    usage_and_halt("no case given");
main([Case | Args]) ->
    %% Keep stdout clean: no logger output at all (crash/supervisor reports).
    ok = logger:set_primary_config(level, none),
    Params = parse_args(Args),
    case atom_to_list(Case) of
        "ping_pong" -> run(fun ping_pong/1, Params);
        "counting"  -> run(fun counting/1, Params);
        "spawn"     -> run_spawn(Params, [Case | Args]);
        "restart"   -> run(fun restart/1, Params);
        Other       -> usage_and_halt("unknown case " ++ Other)
    end.

usage_and_halt(Msg) ->
    io:format(standard_error,
              "vigil_bench: ~s~nusage: erl +S 2 +P 2000000 -noshell -pa <dir> "
              "-s vigil_bench main ping_pong|counting|spawn|restart "
              "[n=N] [producers=P] -s init stop~n", [Msg]),
    erlang:halt(2).

%% Arguments arrive as atoms. Accept "key=value" pairs; bare values are
%% positional: first n, then producers.
parse_args(Args) ->
    {Params, _} =
        lists:foldl(
          fun(A, {Acc, Pos}) ->
                  case string:split(atom_to_list(A), "=") of
                      [K, V] -> {Acc#{K => to_int_or_str(V)}, Pos};
                      [V] ->
                          [K | Rest] = Pos,
                          {Acc#{K => to_int_or_str(V)}, Rest}
                  end
          end, {#{}, ["n", "producers"]}, Args),
    Params.

to_int_or_str(V) ->
    try list_to_integer(V) catch error:badarg -> V end.

param(Params, Key, Default) -> maps:get(Key, Params, Default).

%% Run the benchmark body in a fresh process (clean mailbox/heap) and print.
run(Fun, Params) ->
    Parent = self(),
    {Pid, Ref} = spawn_monitor(fun() -> Parent ! {self(), Fun(Params)} end),
    receive
        {Pid, {Name, Value, Unit, OutParams}} ->
            erlang:demonitor(Ref, [flush]),
            emit(Name, Value, Unit, OutParams);
        {'DOWN', Ref, process, Pid, Reason} ->
            io:format(standard_error, "vigil_bench: benchmark crashed: ~p~n", [Reason]),
            erlang:halt(1)
    end.

emit(Name, Value, Unit, Params) ->
    ParamsJson = lists:join(",", [[json(K), ":", json(V)] || {K, V} <- Params]),
    Line = ["{\"name\":", json(Name), ",\"impl\":\"erlang\",\"value\":", json(Value),
            ",\"unit\":", json(Unit), ",\"params\":{", ParamsJson, "}}\n"],
    io:put_chars(standard_io, Line).

json(V) when is_integer(V) -> integer_to_list(V);
json(V) when is_float(V) -> float_to_list(V, [{decimals, 3}, compact]);
json(V) when is_atom(V) -> json(atom_to_list(V));
json(V) when is_binary(V) -> json(binary_to_list(V));
json(V) when is_list(V) -> [$", escape(V), $"].

escape(S) ->
    [case C of
         $" -> "\\\"";
         $\\ -> "\\\\";
         _ when C < 32 -> io_lib:format("\\u~4.16.0b", [C]);
         _ -> C
     end || C <- S].

rate(Count, NativeTime) ->
    Us = max(?US(NativeTime), 1),
    Count * 1.0e6 / Us.

%%====================================================================
%% 1. ping_pong
%%====================================================================

ping_pong(Params) ->
    N = param(Params, "n", 1000000),
    Ponger = spawn_link(fun pong_loop/0),
    T0 = erlang:monotonic_time(),
    ok = ping_loop(Ponger, N),
    T1 = erlang:monotonic_time(),
    Ponger ! stop,
    {ping_pong, rate(N, T1 - T0), 'round_trips/s',
     [{n, N}, {elapsed_us, ?US(T1 - T0)}]}.

ping_loop(_Ponger, 0) ->
    ok;
ping_loop(Ponger, K) ->
    Ponger ! {ping, self()},
    receive pong -> ping_loop(Ponger, K - 1) end.

pong_loop() ->
    receive
        {ping, From} -> From ! pong, pong_loop();
        stop -> ok
    end.

%%====================================================================
%% 2. counting
%%====================================================================

counting(Params) ->
    N = param(Params, "n", 10000000),
    P = param(Params, "producers", 1),
    true = P >= 1,
    Self = self(),
    Counter = spawn_link(fun() -> count_loop(Self, N, 0) end),
    %% Split N evenly; the first (N rem P) producers send one extra message.
    Shares = [N div P + (case I =< N rem P of true -> 1; false -> 0 end)
              || I <- lists:seq(1, P)],
    Producers = [spawn_link(fun() -> receive go -> produce(Counter, Share) end end)
                 || Share <- Shares],
    T0 = erlang:monotonic_time(),
    [Pr ! go || Pr <- Producers],
    receive {counted, Counter, N} -> ok end,
    T1 = erlang:monotonic_time(),
    {counting, rate(N, T1 - T0), 'msgs/s',
     [{n, N}, {producers, P}, {elapsed_us, ?US(T1 - T0)}]}.

count_loop(Parent, N, N) ->
    Parent ! {counted, self(), N};
count_loop(Parent, N, C) ->
    receive _ -> count_loop(Parent, N, C + 1) end.

produce(_Counter, 0) -> ok;
produce(Counter, K) -> Counter ! msg, produce(Counter, K - 1).

%%====================================================================
%% 3. spawn (simple_one_for_one supervisor)
%%====================================================================

%% One process per child plus some head-room: if the VM's process limit
%% (+P) is too small, re-run ourselves in a child VM with a larger +P.
run_spawn(Params, MainArgs) ->
    N = param(Params, "n", 1000000),
    Needed = N + 10000,
    case erlang:system_info(process_limit) >= Needed of
        true -> run(fun spawn_bench/1, Params);
        false -> reexec_with_process_limit(Needed, MainArgs)
    end.

reexec_with_process_limit(Needed, MainArgs) ->
    Erl = os:find_executable("erl"),
    Dir = filename:dirname(code:which(?MODULE)),
    Plain = [atom_to_list(A) || A <- MainArgs],
    Args = ["+S", integer_to_list(erlang:system_info(schedulers)),
            "+P", integer_to_list(max(Needed * 2, 2000000)),
            "-noshell", "-pa", Dir, "-s", "vigil_bench", "main" | Plain]
        ++ ["-s", "init", "stop"],
    io:format(standard_error,
              "vigil_bench: process_limit ~p too small, re-running with +P~n",
              [erlang:system_info(process_limit)]),
    Port = open_port({spawn_executable, Erl},
                     [{args, Args}, exit_status, binary, stream]),
    relay(Port).

relay(Port) ->
    receive
        {Port, {data, D}} -> io:put_chars(standard_io, D), relay(Port);
        {Port, {exit_status, 0}} -> ok;
        {Port, {exit_status, S}} -> erlang:halt(S)
    end.

spawn_bench(Params) ->
    N = param(Params, "n", 1000000),
    process_flag(trap_exit, true),
    {ok, Sup} = supervisor:start_link(?MODULE, spawn_sup),
    erlang:garbage_collect(),
    Mem0 = erlang:memory(total),
    T0 = erlang:monotonic_time(),
    ok = start_children(Sup, N),
    T1 = erlang:monotonic_time(),
    Mem1 = erlang:memory(total),
    N = proplists:get_value(active, supervisor:count_children(Sup)),
    Stop = param(Params, "stop", "terminate_child"),
    Children = case Stop of
                   "terminate_child" ->
                       [Pid || {_, Pid, _, _} <- supervisor:which_children(Sup)];
                   "shutdown" -> []
               end,
    T2 = erlang:monotonic_time(),
    ok = stop_children(Stop, Sup, Children),
    T3 = erlang:monotonic_time(),
    Total = (T1 - T0) + (T3 - T2),
    {spawn, rate(N, Total), 'agents/s',
     [{n, N},
      {bytes_per_agent, (Mem1 - Mem0) / N},
      {stop, Stop},
      {start_us, ?US(T1 - T0)},
      {stop_us, ?US(T3 - T2)},
      {elapsed_us, ?US(Total)}]}.

%% "terminate_child": supervisor:terminate_child/2 per child (each call
%% sends exit(C, shutdown) and waits for the child's 'DOWN'), then stop the
%% now-empty supervisor.  "shutdown": stop the supervisor directly; it
%% terminates all children itself and waits until all of them are gone.
stop_children("terminate_child", Sup, Children) ->
    lists:foreach(fun(C) -> ok = supervisor:terminate_child(Sup, C) end, Children),
    gen_server:stop(Sup, shutdown, infinity);
stop_children("shutdown", Sup, []) ->
    gen_server:stop(Sup, shutdown, infinity).

start_children(_Sup, 0) -> ok;
start_children(Sup, K) ->
    {ok, _} = supervisor:start_child(Sup, []),
    start_children(Sup, K - 1).

%% Child of the simple_one_for_one supervisor: a linked process that just
%% waits in receive.
start_waiter() ->
    {ok, spawn_link(fun() -> receive stop -> ok end end)}.

%%====================================================================
%% 4. restart (one_for_one supervisor, one permanent gen_server)
%%====================================================================

restart(Params) ->
    N = param(Params, "n", 100000),
    process_flag(trap_exit, true),
    {ok, Sup} = supervisor:start_link(?MODULE, restart_sup),
    Pid0 = child_pid(Sup),
    pong = gen_server:call(Pid0, ping),
    TStart = erlang:monotonic_time(),
    {_, Lats} = lists:foldl(
                  fun(_, {Old, Acc}) ->
                          T0 = erlang:monotonic_time(),
                          gen_server:cast(Old, crash),
                          New = wait_new_child(Sup, Old),
                          T1 = erlang:monotonic_time(),
                          {New, [T1 - T0 | Acc]}
                  end, {Pid0, []}, lists:seq(1, N)),
    TEnd = erlang:monotonic_time(),
    ok = gen_server:stop(Sup, shutdown, infinity),
    Sorted = list_to_tuple(lists:sort(Lats)),
    {restart, rate(N, TEnd - TStart), 'restarts/s',
     [{n, N},
      {p50_us, pct_us(Sorted, 0.50)},
      {p99_us, pct_us(Sorted, 0.99)},
      {max_us, ?US(element(tuple_size(Sorted), Sorted))},
      {elapsed_us, ?US(TEnd - TStart)}]}.

%% Nearest-rank percentile, in microseconds (float).
pct_us(Sorted, Q) ->
    Len = tuple_size(Sorted),
    Rank = max(1, min(Len, ceil(Q * Len))),
    erlang:convert_time_unit(element(Rank, Sorted) * 1000, native, microsecond) / 1000.

child_pid(Sup) ->
    [{worker, Pid, worker, _}] = supervisor:which_children(Sup),
    Pid.

%% Poll which_children until a new, live pid serves a call.
wait_new_child(Sup, Old) ->
    case supervisor:which_children(Sup) of
        [{worker, Pid, worker, _}] when is_pid(Pid), Pid =/= Old ->
            try gen_server:call(Pid, ping) of
                pong -> Pid
            catch exit:_ -> wait_new_child(Sup, Old)
            end;
        _ ->
            wait_new_child(Sup, Old)
    end.

start_worker() ->
    gen_server:start_link(?MODULE, worker, []).

%%====================================================================
%% supervisor / gen_server callbacks
%%====================================================================

init(spawn_sup) ->
    {ok, {#{strategy => simple_one_for_one, intensity => 0, period => 1},
          [#{id => waiter,
             start => {?MODULE, start_waiter, []},
             restart => temporary,
             shutdown => 5000,
             type => worker,
             modules => [?MODULE]}]}};
init(restart_sup) ->
    {ok, {#{strategy => one_for_one, intensity => 1000000000, period => 1},
          [#{id => worker,
             start => {?MODULE, start_worker, []},
             restart => permanent,
             shutdown => 5000,
             type => worker,
             modules => [?MODULE]}]}};
init(worker) ->
    {ok, #{}}.

handle_call(ping, _From, State) -> {reply, pong, State}.

handle_cast(crash, State) -> {stop, crash, State}.

handle_info(_Msg, State) -> {noreply, State}.

terminate(_Reason, _State) -> ok.
